"""MQTT 3.1.1 for a subscriber that reads in bulk: encoders for the packets the agent sends,
and a framer that cuts the broker's byte stream into messages, many frames per call.

Pure: bytes in, values out; the asyncio side is `sentinel.ingest.NativeReader`. The remaining
length is read with `sentinel.traffic.mqtt`'s helper, and violations raise its `MalformedError`
(reasons from a fixed set, so logs and counters stay bounded). A framer holds at most one
frame of `max_packet` bytes (plus a PUBLISH head): a PUBLISH larger than that is skipped and
reported, so that it is acked once and not redelivered forever; any other frame that large
means the stream is not MQTT and raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sentinel.decode import Reason
from sentinel.inbox import Ack
from sentinel.traffic.mqtt import MalformedError, PacketType, remaining_length

PROTOCOL_LEVEL = 4  # MQTT 3.1.1
MAX_REMAINING = 268_435_455  # the largest a four-byte remaining length can say
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
SUBACK_FAILURE = 0x80
# What a broker may send a 3.1.1 client, besides PUBLISH (acks of our own publishes included).
_FROM_BROKER = frozenset(
    {
        PacketType.CONNACK,
        PacketType.PUBACK,
        PacketType.PUBREC,
        PacketType.PUBREL,
        PacketType.PUBCOMP,
        PacketType.SUBACK,
        PacketType.UNSUBACK,
        PacketType.PINGRESP,
    }
)
_PUBLISH = int(PacketType.PUBLISH)
_INCOMPLETE = -1
CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


# --- encoding ----------------------------------------------------------------------------


def encode_length(n: int) -> bytes:
    """The fixed header's remaining length as a variable byte integer."""
    if not 0 <= n <= MAX_REMAINING:
        raise ValueError(f"remaining length {n} out of range")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _field(raw: bytes) -> bytes:
    if len(raw) > 0xFFFF:
        raise ValueError(f"a {len(raw)}-byte field does not fit MQTT's two-byte length")
    return len(raw).to_bytes(2, "big") + raw


def _frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_length(len(body)) + body


def encode_connect(
    client_id: str,
    *,
    username: str | None,
    password: str | None,
    keepalive_s: int,
    clean_session: bool,
) -> bytes:
    flags = (0x02 if clean_session else 0) | (0x80 if username is not None else 0)
    payload = _field(client_id.encode())
    if username is not None:
        payload += _field(username.encode())
    if password is not None:
        flags |= 0x40
        payload += _field(password.encode())
    header = _field(b"MQTT") + bytes((PROTOCOL_LEVEL, flags)) + keepalive_s.to_bytes(2, "big")
    return _frame(PacketType.CONNECT << 4, header + payload)


def encode_subscribe(packet_id: int, filters: Sequence[tuple[str, int]]) -> bytes:
    body = packet_id.to_bytes(2, "big")
    body += b"".join(_field(topic.encode()) + bytes((qos,)) for topic, qos in filters)
    return _frame(PacketType.SUBSCRIBE << 4 | 0b0010, body)


def encode_publish(topic: str, payload: bytes, qos: int, packet_id: int | None = None) -> bytes:
    if qos not in (0, 1) or (qos == 1) != (packet_id is not None):
        raise ValueError("QoS 0 without a packet id, or QoS 1 with one")
    head = _field(topic.encode())
    if packet_id is not None:
        head += packet_id.to_bytes(2, "big")
    return _frame(_PUBLISH << 4 | qos << 1, head + payload)


def encode_pubacks(packet_ids: Iterable[int]) -> bytes:
    """Several PUBACKs back to back: one write for a whole batch."""
    return b"".join(b"\x40\x02" + pid.to_bytes(2, "big") for pid in packet_ids)


# --- decoding ----------------------------------------------------------------------------


@dataclass(slots=True)
class Received:
    """What one chunk of the broker's stream held, in order of arrival."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    acks: list[Ack | None] = field(default_factory=list)  # parallel to messages; None: QoS 0
    controls: list[tuple[PacketType, bytes]] = field(default_factory=list)  # (type, body)
    # PUBLISH frames not handed on, as (reason, packet id or None): to count, and to ack.
    skipped: list[tuple[Reason, int | None]] = field(default_factory=list)


class ClientFramer:
    """Cuts the broker-to-client direction of one connection into packets.

    `feed` takes each chunk as it arrives and returns every complete frame in it; a frame cut
    across chunks waits in a buffer of at most `max_packet` bytes. Acks carry `connection`.
    Raises MalformedError when the stream cannot be MQTT from a broker: the connection is
    then to be closed.
    """

    __slots__ = ("_pending", "_skip", "connection", "max_packet")

    def __init__(self, connection: int, max_packet: int) -> None:
        self.connection = connection
        self.max_packet = max_packet
        self._pending = b""
        self._skip = 0  # bytes still to drop of an oversized PUBLISH

    @property
    def buffered(self) -> int:
        return len(self._pending)

    def feed(self, data: bytes) -> Received:
        got = Received()
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return got
            data, self._skip = data[self._skip :], 0
        buf = self._pending + data if self._pending else data
        off = self._cut(buf, got)
        self._pending = buf[off:] if off < len(buf) else b""
        return got

    def _cut(self, buf: bytes, got: Received) -> int:
        """Append every complete frame of buf to got; return where the rest starts."""
        messages, acks, connection = got.messages, got.acks, self.connection
        n, off = len(buf), 0
        # Once per frame: locals only, and on the PUBLISH path a single call.
        while n - off >= 2:
            first = buf[off]
            header = remaining_length(buf, off + 1, n)
            if header is None:
                break
            remaining, body = header
            end = body + remaining
            if first >> 4 != _PUBLISH or remaining > self.max_packet:
                if not self._other(got, first, buf, body, end):
                    return n if self._skip else off
            else:
                if end > n:
                    break
                if remaining < 2:
                    raise MalformedError("truncated", "PUBLISH without a topic")
                qos = (first >> 1) & 3
                start = body + 2 + ((buf[body] << 8) | buf[body + 1])
                if qos:
                    if qos == 3:
                        raise MalformedError("invalid_qos", "PUBLISH with QoS 3")
                    if start + 2 > end:
                        raise MalformedError("truncated", "PUBLISH packet id")
                    pid = (buf[start] << 8) | buf[start + 1]
                    if not pid:
                        raise MalformedError("protocol_violation", "PUBLISH packet id 0")
                    try:
                        topic = buf[body + 2 : start].decode()
                    except UnicodeDecodeError:
                        got.skipped.append((Reason.BAD_TOPIC, pid))
                    else:
                        messages.append((topic, buf[start + 2 : end]))
                        acks.append((connection, pid))
                else:
                    if start > end:
                        raise MalformedError("truncated", "PUBLISH topic")
                    try:
                        topic = buf[body + 2 : start].decode()
                    except UnicodeDecodeError:
                        got.skipped.append((Reason.BAD_TOPIC, None))
                    else:
                        messages.append((topic, buf[start:end]))
                        acks.append(None)
            off = end
        return off

    def _other(self, got: Received, first: int, buf: bytes, body: int, end: int) -> bool:
        """A control packet or an oversized PUBLISH; False while it is incomplete (or, for
        the PUBLISH, its payload runs past buf: then `_skip` says how much to drop)."""
        n = len(buf)
        if first >> 4 != _PUBLISH:
            if end - body > self.max_packet:
                raise MalformedError("oversized", f"remaining length {end - body}")
            if end > n:
                return False
            self._control(got, first, buf[body:end])
            return True
        pid = _publish_head(first, buf, body, min(n, end))
        if pid == _INCOMPLETE:
            return False  # the head is bounded: a topic is at most 64 KiB
        got.skipped.append((Reason.OVERSIZED, pid or None))
        if end > n:
            self._skip = end - n
            return False
        return True

    @staticmethod
    def _control(got: Received, first: int, body: bytes) -> None:
        code = first >> 4
        if code not in _FROM_BROKER:
            raise MalformedError("unknown_type", f"packet type {code} from a broker")
        got.controls.append((PacketType(code), body))


def _publish_head(first: int, buf: bytes, body: int, avail: int) -> int:
    """The packet id (0 for QoS 0) of a PUBLISH whose head may be in buf[body:avail];
    _INCOMPLETE while the head is still to come. Raises MalformedError on an invalid head."""
    if avail - body < 2:
        return _INCOMPLETE
    qos = (first >> 1) & 3
    if qos == 3:
        raise MalformedError("invalid_qos", "PUBLISH with QoS 3")
    start = body + 2 + ((buf[body] << 8) | buf[body + 1])
    if not qos:
        return 0 if start <= avail else _INCOMPLETE
    if start + 2 > avail:
        return _INCOMPLETE
    pid = (buf[start] << 8) | buf[start + 1]
    if not pid:
        raise MalformedError("protocol_violation", "PUBLISH packet id 0")
    return pid
