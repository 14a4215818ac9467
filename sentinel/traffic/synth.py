"""Synthetic captures with labelled attacks, built with scapy: for tests, benchmarks, evaluations.

Headers are built by scapy once per connection, direction and flags, then only lengths and
sequence numbers are patched per frame (checksums are left as scapy computed them for the
template): building every frame with scapy would take minutes for a benchmark capture. MQTT
bytes come from `scapy.contrib.mqtt`, an encoder independent of our parser. Needs scapy.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from scapy.contrib.mqtt import (
    MQTT,
    MQTTConnack,
    MQTTConnect,
    MQTTPublish,
    MQTTSubscribe,
    MQTTTopicQOS,
)
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether
from scapy.packet import Packet
from scapy.utils import RawPcapNgWriter, RawPcapWriter

Link = Literal["ether", "sll", "sll2", "raw"]
LINKTYPES: dict[Link, int] = {"ether": 1, "sll": 113, "sll2": 276, "raw": 101}
_FLAGS = {"S": 0x02, "SA": 0x12, "A": 0x10, "PA": 0x18, "FA": 0x11, "R": 0x04}


# --- MQTT packets (scapy.contrib.mqtt speaks 3.1 / 3.1.1) ------------------------------------


def mqtt_connect(
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    *,
    keep_alive: int = 60,
    level: int = 4,
    will: tuple[str, bool] | None = None,  # (topic, retain)
    clean: bool = True,
) -> bytes:
    fields: dict[str, Any] = {
        "protoname": b"MQIsdp" if level == 3 else b"MQTT",
        "protolevel": level,
        "klive": keep_alive,
        "clientId": client_id.encode(),
        "cleansess": int(clean),
    }
    if username is not None:
        fields.update(usernameflag=1, username=username.encode())
    if password is not None:
        fields.update(passwordflag=1, password=password.encode())
    if will is not None:
        fields.update(willflag=1, willtopic=will[0].encode(), willmsg=b"offline")
        fields.update(willretainflag=int(will[1]), willQOSflag=1)
    return bytes(MQTT(type=1) / MQTTConnect(**fields))


def mqtt_connack(code: int = 0) -> bytes:
    return bytes(MQTT(type=2) / MQTTConnack(retcode=code))


def mqtt_publish(
    topic: str, payload: bytes, *, qos: int = 0, retain: bool = False, packet_id: int = 1
) -> bytes:
    body = MQTTPublish(topic=topic.encode(), value=payload)
    if qos:
        body.msgid = packet_id
    return bytes(MQTT(type=3, QOS=qos, RETAIN=int(retain)) / body)


def mqtt_subscribe(*filters: str, qos: int = 1, packet_id: int = 1) -> bytes:
    topics = [MQTTTopicQOS(topic=f.encode(), QOS=qos) for f in filters]
    return bytes(MQTT(type=8, QOS=1) / MQTTSubscribe(msgid=packet_id, topics=topics))


def mqtt_control(packet_type: int) -> bytes:
    """A packet with no body: PINGREQ (12), PINGRESP (13), DISCONNECT (14)."""
    return bytes(MQTT(type=packet_type, len=0))


def dns_query(name: str, qid: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00\x00\x01\x00\x01"


# --- frames ------------------------------------------------------------------------------------


def _link(link: Link, ipv6: bool) -> Packet | None:
    proto = 0x86DD if ipv6 else 0x0800
    if link == "ether":
        return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=proto)
    if link == "sll":
        return CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, proto=proto)
    if link == "sll2":
        return CookedLinuxV2(proto=proto, lladdrtype=1, lladdrlen=6)
    return None


@dataclass
class Capture:
    """Frames in time order (sorted when written)."""

    link: Link = "ether"
    frames: list[tuple[float, bytes]] = field(default_factory=list)
    _templates: dict[tuple[str, str, int, int, str, str], tuple[bytes, int, int]] = field(
        default_factory=dict
    )

    def _template(
        self, src: str, dst: str, sport: int, dport: int, proto: str, flags: str
    ) -> tuple[bytes, int, int]:
        """(header bytes, IP offset, transport offset)."""
        key = (src, dst, sport, dport, proto, flags)
        cached = self._templates.get(key)
        if cached is None:
            ipv6 = ":" in src
            l3: Packet = IPv6(src=src, dst=dst) if ipv6 else IP(src=src, dst=dst)
            l4: Packet = (
                TCP(sport=sport, dport=dport, flags=flags, window=64240)
                if proto == "tcp"
                else UDP(sport=sport, dport=dport)
            )
            link = _link(self.link, ipv6)
            pkt = l3 / l4 if link is None else link / l3 / l4
            header = bytes(pkt)
            ip_off = len(header) - len(bytes(l3 / l4))
            cached = (header, ip_off, ip_off + (40 if ipv6 else 20))
            self._templates[key] = cached
        return cached

    def add(self, ts: float, header: tuple[bytes, int, int], payload: bytes) -> bytearray:
        frame = bytearray(header[0] + payload)
        ip_off, l4 = header[1], header[2]
        if frame[ip_off] >> 4 == 4:
            struct.pack_into("!H", frame, ip_off + 2, len(frame) - ip_off)
        else:
            struct.pack_into("!H", frame, ip_off + 4, len(frame) - l4)
        self.frames.append((ts, bytes(frame)))
        return frame

    def tcp(
        self,
        client: str,
        server: str,
        sport: int,
        dport: int = 1883,
        *,
        ts: float,
        handshake: bool = True,
    ) -> TcpConn:
        conn = TcpConn(self, client, server, sport, dport)
        if handshake:
            conn.handshake(ts)
        return conn

    def udp(self, ts: float, src: str, sport: int, dst: str, dport: int, payload: bytes) -> None:
        header = self._template(src, dst, sport, dport, "udp", "")
        frame = self.add(ts, header, payload)
        struct.pack_into("!H", frame, header[2] + 4, 8 + len(payload))
        self.frames[-1] = (ts, bytes(frame))

    def write(self, path: Path, fmt: Literal["pcap", "pcapng"] = "pcap") -> Path:
        self.frames.sort(key=lambda f: f[0])
        writer: RawPcapWriter | RawPcapNgWriter
        if fmt == "pcap":
            writer = RawPcapWriter(str(path), linktype=LINKTYPES[self.link], nano=True)
        else:
            writer = RawPcapNgWriter(str(path))
            writer.linktype = LINKTYPES[self.link]
        with writer:
            writer.write_header(None)
            for ts, frame in self.frames:
                sec = int(ts)
                frac = round((ts - sec) * 1e9) if fmt == "pcap" else None
                writer.write_packet(frame, sec=sec if frac is not None else ts, usec=frac)
        return path


@dataclass
class TcpConn:
    cap: Capture
    client: str
    server: str
    sport: int
    dport: int
    seq: list[int] = field(default_factory=lambda: [1000, 5000])  # client's, server's

    def _segment(self, ts: float, from_client: bool, flags: str, payload: bytes = b"") -> None:
        i = 0 if from_client else 1
        src, dst, sp, dp = (
            (self.client, self.server, self.sport, self.dport)
            if from_client
            else (self.server, self.client, self.dport, self.sport)
        )
        header = self.cap._template(src, dst, sp, dp, "tcp", flags)
        frame = self.cap.add(ts, header, payload)
        struct.pack_into("!II", frame, header[2] + 4, self.seq[i], self.seq[1 - i])
        self.cap.frames[-1] = (ts, bytes(frame))
        self.seq[i] += len(payload) + (1 if flags in ("S", "SA", "FA") else 0)

    def handshake(self, ts: float) -> None:
        self._segment(ts, True, "S")
        self._segment(ts + 0.0001, False, "SA")
        self._segment(ts + 0.0002, True, "A")

    def syn(self, ts: float) -> None:
        """A connection attempt only (a scan)."""
        self._segment(ts, True, "S")

    def send(self, ts: float, payload: bytes, from_client: bool = True, mss: int = 1448) -> None:
        """Payload in segments of at most `mss` bytes (1 µs apart)."""
        for i, start in enumerate(range(0, len(payload), mss)):
            self._segment(ts + i * 1e-6, from_client, "PA", payload[start : start + mss])

    def exchange(self, ts: float, request: bytes, response: bytes | None = None) -> None:
        """The client sends, the server answers (or just acknowledges)."""
        self.send(ts, request)
        if response is None:
            self._segment(ts + 0.0005, False, "A")
        else:
            self.send(ts + 0.0005, response, from_client=False)

    def close(self, ts: float) -> None:
        self._segment(ts, True, "FA")
        self._segment(ts + 0.0001, False, "FA")
        self._segment(ts + 0.0002, True, "A")

    def raw(self, ts: float, payload: bytes, seq_offset: int, from_client: bool = True) -> None:
        """A segment at an arbitrary offset from the next sequence number (reordering tests)."""
        i = 0 if from_client else 1
        saved = self.seq[i]
        self.seq[i] = saved + seq_offset
        self.send(ts, payload, from_client)
        self.seq[i] = saved
