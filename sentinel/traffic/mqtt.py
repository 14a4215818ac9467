"""MQTT 3.1 / 3.1.1 / 5 control packets: a pure parser and a per-direction framer.

Only what detections need is decoded (MQTT 5 properties are stepped over); every violation
becomes a `Malformed` with a reason from a fixed set, so that counters keep bounded labels.
Packets are NamedTuples: immutable, and several times cheaper to build than frozen dataclasses
on a path that runs once per packet.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal, NamedTuple, get_args


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15  # MQTT 5 only


MalformedReason = Literal[
    "bad_remaining_length",  # more than 4 bytes of remaining length: framing is lost
    "unknown_type",  # type 0, or AUTH before MQTT 5
    "reserved_flags",  # fixed-header or CONNECT flag bits that must be zero (or 0b0010)
    "invalid_qos",  # QoS 3 in a PUBLISH, a will or a subscription
    "bad_protocol",  # CONNECT protocol name / level not MQIsdp 3, MQTT 4 or MQTT 5
    "truncated",  # a field runs past the packet's remaining length
    "bad_utf8",
    "before_connect",  # the client's first packet on a stream seen from its start is no CONNECT
    "protocol_violation",  # other rules: wildcard in a PUBLISH topic, a second CONNECT, ...
    "oversized",  # remaining length above the configured maximum
]
MALFORMED_REASONS: tuple[MalformedReason, ...] = get_args(MalformedReason)

_PROTOCOLS = {(b"MQTT", 4), (b"MQTT", 5), (b"MQIsdp", 3)}
_CONNECT_NAMES = (b"\x00\x04MQTT", b"\x00\x06MQIsdp")
_FLAGS_0010 = frozenset({PacketType.PUBREL, PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE})
_EMPTY_BODY = frozenset({PacketType.PINGREQ, PacketType.PINGRESP})
# A framer gives up on a direction after this many malformed packets in a row: it is not MQTT
# (any more), and counting each of its bytes as an attack would only add noise.
_MAX_BAD_RUN = 8


class Will(NamedTuple):
    topic: str
    qos: int
    retain: bool


class Connect(NamedTuple):
    level: int  # 3 = 3.1, 4 = 3.1.1, 5 = 5.0
    client_id: str
    username: str | None
    has_password: bool
    keep_alive: int  # seconds; 0 disables the broker's keep-alive timeout
    clean_session: bool
    will: Will | None


class Connack(NamedTuple):
    session_present: bool
    code: int  # 3.x return code or MQTT 5 reason code: 0 accepts, anything else refuses

    @property
    def refused(self) -> bool:
        return self.code != 0


class Subscribe(NamedTuple):
    packet_id: int
    filters: tuple[tuple[str, int], ...]  # (topic filter, requested QoS)


class Publish(NamedTuple):
    topic: str
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None
    payload_size: int


class Control(NamedTuple):
    """Any other packet (acks, pings, DISCONNECT, ...): its type is all that is kept."""

    type: PacketType


class Malformed(NamedTuple):
    reason: MalformedReason
    first_byte: int  # the fixed header's first byte: type and flags as sent
    detail: str


MqttPacket = Connect | Connack | Subscribe | Publish | Control
_CONTROLS = {t: Control(t) for t in PacketType}


class MalformedError(Exception):
    def __init__(self, reason: MalformedReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: MalformedReason = reason
        self.detail = detail


_TYPE_OF: dict[type, PacketType] = {
    Connect: PacketType.CONNECT,
    Connack: PacketType.CONNACK,
    Subscribe: PacketType.SUBSCRIBE,
    Publish: PacketType.PUBLISH,
}


def packet_type(packet: MqttPacket) -> PacketType:
    return packet.type if isinstance(packet, Control) else _TYPE_OF[type(packet)]


def packet_name(packet: MqttPacket | Malformed) -> str:
    """`PUBLISH`, `CONNACK`, ... or `MALFORMED`: a bounded label for counters."""
    return "MALFORMED" if isinstance(packet, Malformed) else packet_type(packet).name


# --- fields ------------------------------------------------------------------------------


def _u16(b: bytes, off: int, end: int) -> int:
    if off + 2 > end:
        raise MalformedError("truncated", f"two-byte integer at {off}")
    return (b[off] << 8) | b[off + 1]


def _binary(b: bytes, off: int, end: int) -> tuple[bytes, int]:
    n = _u16(b, off, end)
    off += 2
    if off + n > end:
        raise MalformedError("truncated", f"{n}-byte field at {off}")
    return b[off : off + n], off + n


def _text(b: bytes, off: int, end: int) -> tuple[str, int]:
    raw, off = _binary(b, off, end)
    try:
        return raw.decode("utf-8"), off
    except UnicodeDecodeError:
        raise MalformedError("bad_utf8", f"string ending at {off}") from None


def _varint(b: bytes, off: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if off >= end:
            raise MalformedError("truncated", "variable byte integer")
        byte = b[off]
        off += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, off
        shift += 7
        if shift == 28:
            raise MalformedError("bad_remaining_length", "variable byte integer over 4 bytes")


def _skip_properties(b: bytes, off: int, end: int) -> int:
    n, off = _varint(b, off, end)
    if off + n > end:
        raise MalformedError("truncated", f"{n} bytes of properties")
    return off + n


# --- packets -----------------------------------------------------------------------------


def parse_packet(first: int, body: bytes, remaining: int, level: int = 4) -> MqttPacket:
    """One control packet from its first byte and body; raises MalformedError.

    `body` may be shorter than `remaining` for a PUBLISH only (a head cut off by the framer:
    the payload is counted, not read). `level` is the stream's protocol level from its CONNECT.
    """
    code, flags = first >> 4, first & 0x0F
    if code == 0 or (code == PacketType.AUTH and level != 5):
        raise MalformedError("unknown_type", f"packet type {code}")
    ptype = PacketType(code)
    if ptype is PacketType.PUBLISH:
        return _publish(flags, body, remaining, level)
    if flags != (2 if ptype in _FLAGS_0010 else 0):
        raise MalformedError("reserved_flags", f"{ptype.name} flags {flags:#06b}")
    if ptype is PacketType.CONNECT:
        return _connect(body)
    if ptype is PacketType.CONNACK:
        if len(body) < 2:
            raise MalformedError("truncated", "CONNACK")
        if body[0] & 0xFE:
            raise MalformedError("reserved_flags", f"CONNACK flags {body[0]:#04x}")
        return Connack(bool(body[0] & 1), body[1])
    if ptype is PacketType.SUBSCRIBE:
        return _subscribe(body, level)
    if ptype in _EMPTY_BODY and remaining:
        raise MalformedError("protocol_violation", f"{ptype.name} with a {remaining}-byte body")
    return _CONTROLS[ptype]


def _publish(flags: int, body: bytes, remaining: int, level: int) -> Publish:
    qos = (flags >> 1) & 3
    if qos == 3:
        raise MalformedError("invalid_qos", "PUBLISH with QoS 3")
    end = len(body)
    topic, off = _text(body, 0, end)
    if "+" in topic or "#" in topic:
        raise MalformedError("protocol_violation", "wildcard in a PUBLISH topic")
    packet_id = None
    if qos:
        packet_id = _u16(body, off, end)
        off += 2
    if level == 5:
        off = _skip_properties(body, off, end)
    return Publish(topic, qos, bool(flags & 1), bool(flags & 8), packet_id, remaining - off)


def _connect(body: bytes) -> Connect:
    end = len(body)
    name, off = _binary(body, 0, end)
    if off + 4 > end:
        raise MalformedError("truncated", "CONNECT variable header")
    level, flags = body[off], body[off + 1]
    if (name, level) not in _PROTOCOLS:
        raise MalformedError("bad_protocol", f"protocol {name[:16]!r} level {level}")
    if flags & 0x01:
        raise MalformedError("reserved_flags", "CONNECT reserved flag set")
    keep_alive = _u16(body, off + 2, end)
    off += 4
    if level == 5:
        off = _skip_properties(body, off, end)
    client_id, off = _text(body, off, end)
    will = None
    if flags & 0x04:
        if level == 5:
            off = _skip_properties(body, off, end)
        topic, off = _text(body, off, end)
        _, off = _binary(body, off, end)
        will_qos = (flags >> 3) & 3
        if will_qos == 3:
            raise MalformedError("invalid_qos", "will with QoS 3")
        will = Will(topic, will_qos, bool(flags & 0x20))
    elif flags & 0x38:
        raise MalformedError("protocol_violation", "will QoS or retain without a will")
    username = None
    if flags & 0x80:
        username, off = _text(body, off, end)
    if flags & 0x40:
        _, off = _binary(body, off, end)
    if off != end:
        raise MalformedError("protocol_violation", f"{end - off} bytes after the CONNECT payload")
    return Connect(
        level, client_id, username, bool(flags & 0x40), keep_alive, bool(flags & 2), will
    )


def _subscribe(body: bytes, level: int) -> Subscribe:
    end = len(body)
    packet_id = _u16(body, 0, end)
    off = 2 if level != 5 else _skip_properties(body, 2, end)
    filters: list[tuple[str, int]] = []
    while off < end:
        topic, off = _text(body, off, end)
        if off >= end:
            raise MalformedError("truncated", "subscription options")
        options = body[off]
        off += 1
        if options & 3 == 3:
            raise MalformedError("invalid_qos", f"subscription to {topic[:64]!r} with QoS 3")
        if options & (0xC0 if level == 5 else 0xFC):
            raise MalformedError("reserved_flags", f"subscription options {options:#04x}")
        filters.append((topic, options & 3))
    if not filters:
        raise MalformedError("protocol_violation", "SUBSCRIBE without a topic filter")
    return Subscribe(packet_id, tuple(filters))


# --- streams -----------------------------------------------------------------------------


def remaining_length(buf: bytes, off: int, end: int) -> tuple[int, int] | None:
    """(remaining length, body offset) of the fixed header whose length starts at `off`;
    None while the length is still incomplete (more bytes will come)."""
    try:
        return _varint(buf, off, end)
    except MalformedError as exc:
        if exc.reason == "truncated":
            return None
        raise


class Framer:
    """Cuts one direction of a TCP stream into packets, holding at most `max_buffer` bytes.

    A PUBLISH larger than `max_buffer` is parsed from its head and its payload skipped; any
    packet announcing more than `max_packet` bytes (or a non-PUBLISH above `max_buffer`) is
    reported `oversized` and skipped. Once framing is lost (bad remaining length, a gap in the
    TCP stream, a run of malformed packets) the framer is `dead` and ignores what follows.
    """

    __slots__ = ("_bad_run", "_max_buffer", "_max_packet", "_pending", "_skip", "dead", "level")

    def __init__(self, max_buffer: int = 65536, max_packet: int = 16 << 20, level: int = 4) -> None:
        self.level = level
        self.dead = False
        self._pending = b""
        self._skip = 0
        self._bad_run = 0
        self._max_buffer = max_buffer
        self._max_packet = max_packet

    @property
    def buffered(self) -> int:
        return len(self._pending)

    def feed(self, data: bytes) -> list[MqttPacket | Malformed]:
        out: list[MqttPacket | Malformed] = []
        if self.dead:
            return out
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return out
            data, self._skip = data[self._skip :], 0
        buf = self._pending + data if self._pending else data
        n, off = len(buf), 0
        while n - off >= 2 and not self.dead:
            first = buf[off]
            try:
                header = remaining_length(buf, off + 1, n)
            except MalformedError as exc:
                out.append(Malformed(exc.reason, first, exc.detail))
                self.dead = True
                break
            if header is None:
                break
            remaining, body = header
            avail = n - body
            publish = first >> 4 == PacketType.PUBLISH
            if remaining > self._max_packet or (remaining > self._max_buffer and not publish):
                out.append(Malformed("oversized", first, f"remaining length {remaining}"))
                if avail < remaining:
                    self._skip, off = remaining - avail, n
                    break
                off = body + remaining
                continue
            if avail < remaining:
                if remaining <= self._max_buffer or avail < self._max_buffer:
                    break  # wait for the rest (bounded by max_buffer)
                out.append(self._parse(first, buf[body : body + self._max_buffer], remaining))
                self._skip, off = remaining - avail, n
                break
            out.append(self._parse(first, buf[body : body + remaining], remaining))
            off = body + remaining
        self._pending = b"" if self.dead or off >= n else buf[off:]
        return out

    def _parse(self, first: int, body: bytes, remaining: int) -> MqttPacket | Malformed:
        try:
            packet = parse_packet(first, body, remaining, self.level)
        except MalformedError as exc:
            self._bad_run += 1
            self.dead = self._bad_run >= _MAX_BAD_RUN
            return Malformed(exc.reason, first, exc.detail)
        self._bad_run = 0
        return packet


def connect_prefix(buf: bytes) -> bool | None:
    """Do these first bytes of a stream start an MQTT CONNECT? None: too few bytes to tell."""
    if not buf:
        return None
    if buf[0] != 0x10:
        return False
    try:
        header = remaining_length(buf, 1, len(buf))
    except MalformedError:
        return False
    if header is None:
        return None
    rest = buf[header[1] : header[1] + 8]
    if any(rest.startswith(name) for name in _CONNECT_NAMES):
        return True
    if any(name.startswith(rest) for name in _CONNECT_NAMES):
        return None
    return False


def exact_packets(segment: bytes, level: int = 4) -> list[MqttPacket] | None:
    """The packets of a segment that holds only whole, valid MQTT packets, else None.

    Used to recognise MQTT in a stream picked up in the middle (capture started late).
    """
    framer = Framer(max_buffer=len(segment) + 1, level=level)
    packets = framer.feed(segment)
    if not packets or framer.buffered or framer.dead or framer._skip:
        return None
    valid = [p for p in packets if not isinstance(p, Malformed)]
    return valid if len(valid) == len(packets) else None
