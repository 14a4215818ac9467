"""TCP streams: per-direction reassembly, MQTT recognised by content, protocol events.

A stream is MQTT when the client's first bytes are a CONNECT naming "MQTT" or "MQIsdp" (any
port), when its server is a known broker (a configured port, or an address:port that already
answered a CONNECT), or, for a stream picked up mid-way, when its first segment is made of
whole valid MQTT packets. Every other stream is dropped from reassembly at its first bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from sentinel.traffic.config import TrafficConfig
from sentinel.traffic.mqtt import (
    Connect,
    Framer,
    Malformed,
    MqttPacket,
    PacketType,
    connect_prefix,
    exact_packets,
    packet_type,
)
from sentinel.traffic.packet import ip_text

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
_MASK, _HALF = 0xFFFFFFFF, 0x80000000
_UNDECIDED, _MQTT, _OTHER = 0, 1, 2
_PREFIX_MAX = 64  # a CONNECT is recognised within its first 14 bytes
_MAX_BROKERS = 65536  # server endpoints remembered as brokers
_CLIENT_ONLY = frozenset(
    {PacketType.CONNECT, PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE, PacketType.PINGREQ}
)
_SERVER_ONLY = frozenset(
    {PacketType.CONNACK, PacketType.SUBACK, PacketType.UNSUBACK, PacketType.PINGRESP}
)


class Endpoint(NamedTuple):
    ip: str
    port: int

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


class MqttEvent(NamedTuple):
    """One MQTT packet (or violation) on one stream, with the stream's session context."""

    ts: float
    stream: int
    src: Endpoint
    dst: Endpoint
    from_client: bool
    packet: MqttPacket | Malformed
    client_id: str | None  # from the stream's CONNECT; None before it or mid-stream
    username: str | None

    @property
    def client(self) -> Endpoint:
        return self.src if self.from_client else self.dst


class Half:
    """One direction's reassembly: bytes in sequence order; early segments held, bounded."""

    __slots__ = ("held", "held_bytes", "next_seq")

    def __init__(self) -> None:
        self.next_seq: int | None = None
        self.held: dict[int, bytes] = {}
        self.held_bytes = 0

    def push(self, seq: int, data: bytes, cap: int) -> bytes | None:
        """The bytes now in order (maybe b""); None when more than `cap` bytes wait on a gap."""
        nxt = seq if self.next_seq is None else self.next_seq
        ahead = (seq - nxt) & _MASK
        if ahead >= _HALF:  # starts before what we have: a retransmission, maybe longer
            behind = (nxt - seq) & _MASK
            if behind >= len(data):
                return b""
            data, ahead = data[behind:], 0
        if ahead:
            old = self.held.get(seq, b"")
            if len(data) > len(old):
                self.held[seq] = data
                self.held_bytes += len(data) - len(old)
            self.next_seq = nxt
            return None if self.held_bytes > cap else b""
        nxt = (nxt + len(data)) & _MASK
        while self.held:
            ready = [s for s in self.held if (nxt - s) & _MASK < _HALF]
            if not ready:
                break
            for s in ready:
                chunk = self.held.pop(s)
                self.held_bytes -= len(chunk)
                behind = (nxt - s) & _MASK
                if behind < len(chunk):
                    data += chunk[behind:]
                    nxt = (nxt + len(chunk) - behind) & _MASK
        self.next_seq = nxt
        return data


class TcpStream:
    __slots__ = (
        "client",
        "client_id",
        "connected",
        "ends",
        "eps",
        "fins",
        "framers",
        "halves",
        "id",
        "prefix",
        "start_seen",
        "state",
        "synced",
        "username",
    )

    def __init__(self, sid: int, ends: tuple[bytes, int, bytes, int]) -> None:
        self.id = sid
        self.ends = ends  # (ip a, port a, ip b, port b); direction 0 is a -> b
        self.state = _UNDECIDED
        self.client: int | None = None  # the direction the client sends in
        self.start_seen = False  # handshake or first CONNECT seen: protocol order is checked
        self.halves = (Half(), Half())
        self.framers: tuple[Framer, Framer] | None = None
        self.prefix = b""
        self.fins = 0
        self.connected = False
        self.client_id: str | None = None
        self.username: str | None = None
        self.eps: tuple[Endpoint, Endpoint] | None = None
        self.synced = [False, False]  # mid-stream: a valid packet seen in this direction

    def endpoint(self, direction: int) -> tuple[bytes, int]:
        """The receiver of `direction`."""
        e = self.ends
        return (e[2], e[3]) if direction == 0 else (e[0], e[1])


class StreamTable:
    """All open TCP streams; calls `emit` with each MQTT event, in capture order."""

    def __init__(self, config: TrafficConfig, emit: Callable[[MqttEvent], None]) -> None:
        self._cfg = config
        self._emit = emit
        self._streams: dict[tuple[bytes, int, bytes, int], tuple[TcpStream, int]] = {}
        self._brokers: set[tuple[bytes, int]] = set()
        self._ports = frozenset(config.mqtt_ports)
        self.streams = 0
        self.mqtt_streams = 0
        self.midstream = 0  # MQTT streams recognised without their start
        self.gaps = 0  # directions abandoned on a hole larger than max_buffer_bytes
        self.evicted = 0
        self.desynced = 0  # mid-stream directions dropped: picked up inside a packet

    def segment(
        self,
        ts: float,
        src: bytes,
        sport: int,
        dst: bytes,
        dport: int,
        flags: int,
        seq: int,
        ack: int,
        payload: bytes,
    ) -> None:
        entry = self._streams.get((src, sport, dst, dport))
        if entry is None:
            if not (payload or flags & SYN) or flags & RST:
                return  # a bare ACK or RST of a stream we never saw (or already closed)
            stream, d = self._open(src, sport, dst, dport), 0
        else:
            stream, d = entry
        if flags & SYN and stream.client is None:
            stream.client = 1 - d if flags & ACK else d
            stream.start_seen = True
            stream.halves[d].next_seq = (seq + 1) & _MASK
            if flags & ACK and stream.halves[1 - d].next_seq is None:
                stream.halves[1 - d].next_seq = ack
        if payload and stream.state != _OTHER:
            self._data(stream, d, seq, payload, ts)
        if flags & (FIN | RST):
            stream.fins |= 3 if flags & RST else 1 << d
            if stream.fins == 3:
                self._close(stream)

    def finish(self) -> None:
        for stream, d in list(self._streams.values()):
            if d == 0:
                self._close(stream)

    def _open(self, src: bytes, sport: int, dst: bytes, dport: int) -> TcpStream:
        if len(self._streams) >= 2 * self._cfg.max_streams:
            oldest, _ = self._streams[next(iter(self._streams))]
            self._close(oldest)
            self.evicted += 1
        self.streams += 1
        stream = TcpStream(self.streams, (src, sport, dst, dport))
        self._streams[(src, sport, dst, dport)] = (stream, 0)
        self._streams[(dst, dport, src, sport)] = (stream, 1)
        return stream

    def _close(self, stream: TcpStream) -> None:
        if stream.state == _MQTT and any(h.held_bytes for h in stream.halves):
            self.gaps += 1
        a, ap, b, bp = stream.ends
        self._streams.pop((a, ap, b, bp), None)
        self._streams.pop((b, bp, a, ap), None)

    def _data(self, stream: TcpStream, d: int, seq: int, payload: bytes, ts: float) -> None:
        if stream.framers is not None and stream.framers[d].dead:
            return  # this direction is lost: no need to reassemble it any more
        half = stream.halves[d]
        data = half.push(seq, payload, self._cfg.max_buffer_bytes)
        if data is None:  # a hole we cannot wait for any longer: this direction is lost
            half.held.clear()
            half.held_bytes = 0
            if stream.state == _MQTT and stream.framers is not None:
                self.gaps += 1
                stream.framers[d].dead = True
            else:
                stream.state = _OTHER
            return
        if not data:
            return
        if stream.state == _UNDECIDED:
            data = self._decide(stream, d, data)
            if stream.state != _MQTT:
                return
        self._feed(stream, d, data, ts)

    def _is_broker(self, endpoint: tuple[bytes, int]) -> bool:
        return endpoint[1] in self._ports or endpoint in self._brokers

    def _decide(self, stream: TcpStream, d: int, data: bytes) -> bytes:
        """Classify the stream at its first in-order bytes; returns the bytes to parse."""
        if stream.client is None:
            client = self._midstream_client(stream, d, data)
            if client is None:
                stream.state = _OTHER
                return data
            stream.client = client
            stream.start_seen = d == client and connect_prefix(data) is True
            self.midstream += not stream.start_seen
            return self._mqtt(stream, data)
        server = stream.endpoint(stream.client)
        if d != stream.client:  # the server spoke first: only a known broker stays MQTT
            return self._mqtt(stream, data) if self._is_broker(server) else self._other(stream)
        data = stream.prefix + data
        looks = connect_prefix(data)
        if looks is None and len(data) < _PREFIX_MAX:
            stream.prefix = data
            return data
        if looks:
            if len(self._brokers) < _MAX_BROKERS:
                self._brokers.add(server)
        elif not self._is_broker(server):
            return self._other(stream)
        return self._mqtt(stream, data)

    def _other(self, stream: TcpStream) -> bytes:
        stream.state, stream.prefix = _OTHER, b""
        return b""

    def _mqtt(self, stream: TcpStream, data: bytes) -> bytes:
        stream.state, stream.prefix = _MQTT, b""
        self.mqtt_streams += 1
        cfg = self._cfg
        stream.framers = (
            Framer(cfg.max_buffer_bytes, cfg.max_packet_bytes),
            Framer(cfg.max_buffer_bytes, cfg.max_packet_bytes),
        )
        return data

    def _midstream_client(self, stream: TcpStream, d: int, data: bytes) -> int | None:
        """The client's direction for a stream whose handshake we missed, None if not MQTT."""
        if connect_prefix(data) or self._is_broker(stream.endpoint(d)):
            return d
        if self._is_broker(stream.endpoint(1 - d)):
            return 1 - d
        packets = exact_packets(data)
        types = {packet_type(p) for p in packets or ()}
        if types & _CLIENT_ONLY:
            return d
        if types & _SERVER_ONLY:
            return 1 - d
        return None  # not MQTT, or only packets both sides send (PUBLISH, acks)

    def _feed(self, stream: TcpStream, d: int, data: bytes, ts: float) -> None:
        assert stream.framers is not None
        framer = stream.framers[d]
        packets = framer.feed(data)
        if not packets:
            return
        if not stream.start_seen and not stream.synced[d]:
            if isinstance(packets[0], Malformed):
                # Picked up in the middle of a packet: no way to find the next boundary, and
                # the bytes are not the sender's fault. Drop the direction, report nothing.
                framer.dead = True
                self.desynced += 1
                return
            stream.synced[d] = True
        if stream.eps is None:
            a, ap, b, bp = stream.ends
            stream.eps = (Endpoint(ip_text(a), ap), Endpoint(ip_text(b), bp))
        src, dst = stream.eps if d == 0 else (stream.eps[1], stream.eps[0])
        from_client = d == stream.client
        for packet in packets:
            violation = self._session(stream, packet) if from_client else None
            if violation is not None:
                self._event(ts, stream, src, dst, True, violation)
            self._event(ts, stream, src, dst, from_client, packet)

    def _session(self, stream: TcpStream, packet: MqttPacket | Malformed) -> Malformed | None:
        """Protocol-order checks on the client's packets; learns the session from CONNECT."""
        if isinstance(packet, Malformed):
            return None
        ptype = packet_type(packet)
        if isinstance(packet, Connect):
            if stream.connected:
                return Malformed("protocol_violation", ptype << 4, "second CONNECT")
            stream.connected = True
            stream.client_id, stream.username = packet.client_id, packet.username
            assert stream.framers is not None
            for framer in stream.framers:
                framer.level = packet.level
        elif stream.start_seen and not stream.connected:
            return Malformed("before_connect", ptype << 4, f"{ptype.name} before CONNECT")
        return None

    def _event(
        self,
        ts: float,
        stream: TcpStream,
        src: Endpoint,
        dst: Endpoint,
        from_client: bool,
        packet: MqttPacket | Malformed,
    ) -> None:
        self._emit(
            MqttEvent(
                ts, stream.id, src, dst, from_client, packet, stream.client_id, stream.username
            )
        )
