"""The analyzer: frames in, MQTT events, host windows and alerts out.

`Analyzer.feed` takes one frame at a time, so a live capture drives it as a file does; `event`
takes MQTT events from another source (Mosquitto's log, `sentinel.traffic.brokerlog`), which go
through the very same detections. Live, `tick` closes windows on the clock and forgets what went
quiet, and the `on_alert` / `on_features` callbacks replace the kept lists.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from detectors.model import DeviceRef
from sentinel.traffic.alerts import AlertListener, AlertLog, TrafficAlert
from sentinel.traffic.config import TrafficConfig
from sentinel.traffic.detect import Detections
from sentinel.traffic.flows import FlowFeatures, FlowTracker, HostState, HostWindow
from sentinel.traffic.mqtt import Malformed, packet_name
from sentinel.traffic.packet import PROTO_TCP, PROTO_UDP, ip_layer, ip_packed
from sentinel.traffic.pcap import CaptureReader
from sentinel.traffic.streams import ACK, SYN, MqttEvent, StreamTable

_TCP = struct.Struct("!HHIIH")
_UDP = struct.Struct("!HH")


@dataclass
class Summary:
    packets: int = 0
    bytes: int = 0  # captured frame bytes
    first_ts: float | None = None
    last_ts: float | None = None
    not_ip: int = 0  # ARP, other ethertypes, frames too short for their headers
    unsupported_link: int = 0
    fragments: int = 0  # IP fragments: counted in flows, transport not decoded
    tcp_packets: int = 0
    udp_packets: int = 0
    tcp_streams: int = 0
    mqtt_streams: int = 0
    mqtt_midstream: int = 0  # MQTT streams picked up after their start
    mqtt_desynced: int = 0  # directions of those dropped: picked up inside a packet
    mqtt_packets: int = 0
    mqtt_by_type: dict[str, int] = field(default_factory=dict)
    parse_errors: int = 0
    parse_errors_by_reason: dict[str, int] = field(default_factory=dict)
    reassembly_gaps: int = 0
    flows: int = 0  # TCP streams + UDP flows
    dns_queries: int = 0
    hosts: int = 0
    alerts: int = 0
    alerts_by_kind: dict[str, int] = field(default_factory=dict)
    damage: str | None = None  # why reading stopped early, for a truncated or corrupt file

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Analysis:
    summary: Summary
    alerts: list[TrafficAlert]
    features: list[FlowFeatures]
    events: list[MqttEvent]


class Analyzer:
    def __init__(
        self,
        config: TrafficConfig | None = None,
        inventory: Mapping[bytes, DeviceRef] | None = None,
        *,
        keep_events: bool = False,
        keep_features: bool = True,
        keep_alerts: bool = True,
        on_alert: AlertListener | None = None,
        on_features: Callable[[FlowFeatures], None] | None = None,
    ) -> None:
        self.config = cfg = config or TrafficConfig()
        self.summary = Summary()
        self._inventory = inventory
        self._log = AlertLog(cfg, on_alert, keep=keep_alerts)
        self._on_features = on_features
        self._next_prune = 0.0
        self._detections = Detections(cfg, self._log, self._device_of)
        self._streams = StreamTable(cfg, self._on_event)
        self._flows = FlowTracker(cfg, inventory, self._on_window)
        self._types: Counter[str] = Counter()
        self._reasons: Counter[str] = Counter()
        self._keep_events = keep_events
        self._keep_features = keep_features
        self.events: list[MqttEvent] = []
        self.features: list[FlowFeatures] = []

    def _device_of(self, ip: str) -> DeviceRef | None:
        if self._inventory is None:
            return None
        try:
            return self._inventory.get(ip_packed(ip))
        except OSError:  # the broker log's "unknown" client: no address, so no device
            return None

    def _on_event(self, ev: MqttEvent) -> None:
        packet = ev.packet
        if isinstance(packet, Malformed):
            self._reasons[packet.reason] += 1
        else:
            self._types[packet_name(packet)] += 1
        self._detections.event(ev)
        if self._keep_events:
            self.events.append(ev)

    def _on_window(self, host: HostState, w: HostWindow, start: float, end: float) -> None:
        self._detections.window(host, w, start, end)
        if self._keep_features or self._on_features is not None:
            features = FlowTracker.features(host, w, start, end)
            if self._keep_features:
                self.features.append(features)
            if self._on_features is not None:
                self._on_features(features)

    def event(self, ev: MqttEvent) -> None:
        """An MQTT event that did not come from a frame (e.g. a line of the broker's log)."""
        self._on_event(ev)

    def tick(self, now: float) -> None:
        """Live: close the flow window `now` has passed and, once a window, forget the alerts
        gone quiet (an attacker's made-up subjects must not pile up)."""
        self._flows.advance(now)
        if now >= self._next_prune:
            self._log.prune(now)
            self._next_prune = now + self.config.window_s

    def feed(self, ts: float, linktype: int, frame: bytes) -> None:
        s = self.summary
        s.packets += 1
        s.bytes += len(frame)
        if s.first_ts is None:
            s.first_ts = ts
        s.last_ts = ts
        ip = ip_layer(linktype, frame)
        if ip is None:
            s.not_ip += 1
            return
        proto, src, dst, l4, end, length, fragment = ip
        self._flows.packet(ts, src, dst, length)
        if fragment:
            s.fragments += 1
        elif proto == PROTO_TCP and end - l4 >= 20:
            s.tcp_packets += 1
            sport, dport, seq, ack, off_flags = _TCP.unpack_from(frame, l4)
            flags = off_flags & 0x3F
            if flags & SYN and not flags & ACK:
                self._flows.contact(ts, src, dst, dport, tcp=True)
            start = l4 + (off_flags >> 12) * 4
            payload = frame[start:end] if end > start else b""
            self._streams.segment(ts, src, sport, dst, dport, flags, seq, ack, payload)
        elif proto == PROTO_UDP and end - l4 >= 8:
            s.udp_packets += 1
            sport, dport = _UDP.unpack_from(frame, l4)
            payload = frame[l4 + 8 : end] if dport == 53 else b""
            self._flows.udp(ts, src, sport, dst, dport, payload)

    def finish(self) -> Analysis:
        """Close the last window and the open streams; summarise."""
        self._streams.finish()
        self._flows.close()
        s, st = self.summary, self._streams
        s.tcp_streams, s.mqtt_streams, s.mqtt_midstream = st.streams, st.mqtt_streams, st.midstream
        s.reassembly_gaps, s.mqtt_desynced = st.gaps, st.desynced
        s.mqtt_by_type = dict(sorted(self._types.items()))
        s.mqtt_packets = sum(self._types.values())
        s.parse_errors_by_reason = dict(sorted(self._reasons.items()))
        s.parse_errors = sum(self._reasons.values())
        s.flows = st.streams + self._flows.udp_flows
        s.dns_queries = self._flows.dns_queries
        s.hosts = self._flows.hosts
        alerts = sorted(self._log.alerts, key=lambda a: (a.first, a.kind, a.subject))
        s.alerts = len(alerts)
        s.alerts_by_kind = dict(sorted(Counter(a.kind for a in alerts).items()))
        return Analysis(s, alerts, self.features, self.events)


def analyze_file(
    path: Path | str,
    config: TrafficConfig | None = None,
    inventory: Mapping[bytes, DeviceRef] | None = None,
    *,
    keep_events: bool = False,
    keep_features: bool = True,
) -> Analysis:
    """Analyze a pcap or pcapng file; raises CaptureError when it cannot be read at all."""
    analyzer = Analyzer(config, inventory, keep_events=keep_events, keep_features=keep_features)
    with CaptureReader(path) as reader:
        feed = analyzer.feed
        for ts, linktype, frame in reader:
            feed(ts, linktype, frame)
        analyzer.summary.damage = reader.damage
        analyzer.summary.unsupported_link = reader.unsupported_frames
    return analyzer.finish()
