"""Detections over MQTT events (as they come) and host windows (as they close).

Pure: time comes from the packets. Every alert goes through `AlertLog.hit`, which merges a hit
into the same (kind, subject) alert while hits keep coming within one window.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Iterable

from detectors.model import DeviceRef, EvidenceValue
from sentinel.traffic.alerts import AlertLog, SlidingCount, SlidingDistinct
from sentinel.traffic.config import AlertKind, TrafficConfig
from sentinel.traffic.flows import HostState, HostWindow
from sentinel.traffic.mqtt import Connack, Connect, Malformed, Publish, Subscribe
from sentinel.traffic.packet import ip_text
from sentinel.traffic.streams import MqttEvent

_SAMPLE = 10  # values listed in an evidence string


def compile_filter(topic_filter: str) -> re.Pattern[str]:
    """An MQTT topic filter as a regular expression (one fullmatch is cheaper than a split)."""
    levels = topic_filter.split("/")
    tail = ""
    if levels[-1] == "#":
        levels.pop()
        tail = "(?:/.*)?" if levels else ".*"  # "a/#" also matches "a" itself
    body = "/".join("[^/]*" if level == "+" else re.escape(level) for level in levels)
    return re.compile(body + tail, re.DOTALL)


def _sample(values: Iterable[object]) -> str:
    items = sorted(str(v) for v in values)
    more = f" (+{len(items) - _SAMPLE})" if len(items) > _SAMPLE else ""
    return ",".join(items[:_SAMPLE]) + more


class Detections:
    def __init__(
        self,
        config: TrafficConfig,
        log: AlertLog,
        device_of: Callable[[str], DeviceRef | None],
    ) -> None:
        self._cfg = config
        self._log = log
        self._device_of = device_of
        span = config.window_s
        self._refused_ip = SlidingCount(span)
        self._refused_user = SlidingCount(span)
        self._users_of_ip = SlidingDistinct(span)
        self._ips_of_user = SlidingDistinct(span)
        self._accepted = SlidingCount(span)
        self._ips_of_id = SlidingDistinct(span)
        self._long_keep_alive = SlidingCount(span)
        self._publishes = SlidingCount(span)
        self._counters = (
            self._refused_ip,
            self._refused_user,
            self._users_of_ip,
            self._ips_of_user,
            self._accepted,
            self._ips_of_id,
            self._long_keep_alive,
            self._publishes,
        )
        self._next_prune = 0.0
        self._command = compile_filter(config.command_topic).fullmatch
        self._retain_ok = [compile_filter(f).fullmatch for f in config.retain_topics]
        self._operators = frozenset(config.operators)
        self._gateways = frozenset(config.gateways)

    # --- MQTT events -----------------------------------------------------------------------

    def event(self, ev: MqttEvent) -> None:
        p = ev.packet
        if isinstance(p, Publish):
            if ev.from_client:
                self._publish(ev, p)
        elif isinstance(p, Malformed):
            self._malformed(ev, p)
        elif isinstance(p, Connect):
            self._connect(ev, p)
        elif isinstance(p, Connack):
            self._connack(ev, p)
        elif isinstance(p, Subscribe):
            self._subscribe(ev, p)
        if ev.ts >= self._next_prune:
            for counter in self._counters:
                counter.prune(ev.ts)
            self._next_prune = ev.ts + self._cfg.window_s

    def _hit(
        self,
        kind: AlertKind,
        subject: str,
        ev: MqttEvent,
        evidence: dict[str, EvidenceValue],
        first: float | None = None,
        count: int = 1,
    ) -> None:
        ip, start = ev.client.ip, ev.ts if first is None else first
        self._log.hit(kind, subject, ip, self._device_of(ip), start, ev.ts, count, evidence)

    def _over(
        self,
        kind: AlertKind,
        counter: SlidingCount,
        key: str,
        threshold: int,
        ev: MqttEvent,
        evidence: dict[str, EvidenceValue],
    ) -> None:
        """Alert when `key` has `threshold` events in the window; the opening hit counts all."""
        times = counter.add(key, ev.ts)
        if len(times) < threshold:
            return
        if self._log.is_open(kind, key, ev.ts):
            self._hit(kind, key, ev, evidence)
        else:
            self._hit(kind, key, ev, evidence, first=times[0], count=len(times))

    @staticmethod
    def _ident(ev: MqttEvent) -> str:
        return ev.client_id or str(ev.client)

    def _connect(self, ev: MqttEvent, p: Connect) -> None:
        cfg, ip = self._cfg, ev.client.ip
        if p.client_id:
            ips = self._ips_of_id.add(p.client_id, ip, ev.ts)
            if len(ips) >= cfg.client_id_ips:
                evidence: dict[str, EvidenceValue] = {"ips": _sample(ips), "n_ips": len(ips)}
                opening = not self._log.is_open("client_id_multi_ip", p.client_id, ev.ts)
                first, count = (min(ips.values()), len(ips)) if opening else (ev.ts, 1)
                self._hit("client_id_multi_ip", p.client_id, ev, evidence, first, count)
        if p.keep_alive == 0 or p.keep_alive >= cfg.slowite_keep_alive_s:
            evidence = {"keep_alive_s": p.keep_alive, "client_id": p.client_id}
            self._over("slowite", self._long_keep_alive, ip, cfg.slowite_connections, ev, evidence)
        if p.will is not None:
            self._published(ev, p.will.topic, p.will.retain, p.username, "will")

    def _connack(self, ev: MqttEvent, p: Connack) -> None:
        cfg, ip, user = self._cfg, ev.client.ip, ev.username
        if not p.refused:
            ident = self._ident(ev)
            evidence: dict[str, EvidenceValue] = {"client_ip": ip}
            self._over("reconnect_storm", self._accepted, ident, cfg.reconnects, ev, evidence)
            return
        users = self._users_of_ip.add(ip, user or "", ev.ts)
        evidence = {"last_code": p.code, "usernames": _sample(u or "-" for u in users)}
        self._over("brute_force_ip", self._refused_ip, ip, cfg.brute_force_failures, ev, evidence)
        if user:
            ips = self._ips_of_user.add(user, ip, ev.ts)
            evidence = {"last_code": p.code, "ips": _sample(ips), "n_ips": len(ips)}
            self._over(
                "brute_force_user",
                self._refused_user,
                user,
                cfg.brute_force_failures,
                ev,
                evidence,
            )

    def _subscribe(self, ev: MqttEvent, p: Subscribe) -> None:
        if ev.username in self._operators:
            return
        bad = {f: why for f, _ in p.filters if (why := self._forbidden(f, ev)) is not None}
        if bad:
            evidence: dict[str, EvidenceValue] = {
                "filters": _sample(bad),
                "reason": _sample(set(bad.values())),
                "username": ev.username,
                "client_id": ev.client_id,
            }
            self._hit("forbidden_subscription", self._ident(ev), ev, evidence, count=len(bad))

    def _forbidden(self, topic_filter: str, ev: MqttEvent) -> str | None:
        """Why a non-operator may not subscribe to this filter, or None."""
        if topic_filter.startswith("$share/"):  # MQTT 5 shared subscription: $share/group/filter
            topic_filter = topic_filter.split("/", 2)[-1]
        levels = topic_filter.split("/")
        if levels[0].startswith("$"):
            return "broker_internals"
        if levels[0] in ("#", "+"):
            return "all_topics"
        cfg = self._cfg
        dev = cfg.device_level
        if levels[0] != cfg.topic_root:
            return "outside_fleet"
        if ev.username in self._gateways:
            return "fleet_wide" if "#" in levels[: dev + 1] else None
        identity = ev.username or ev.client_id
        if len(levels) > dev and levels[dev] == identity and "#" not in levels[:dev]:
            return None
        return "other_devices"

    def _publish(self, ev: MqttEvent, p: Publish) -> None:
        cfg = self._cfg
        self._published(ev, p.topic, p.retain, ev.username, "publish")
        if p.payload_size > cfg.max_payload_bytes:
            evidence: dict[str, EvidenceValue] = {
                "topic": p.topic,
                "payload_bytes": p.payload_size,
                "max": cfg.max_payload_bytes,
            }
            self._hit("oversized_payload", self._ident(ev), ev, evidence)
        if ev.username not in self._gateways:
            ident = self._ident(ev)
            evidence = {"last_topic": p.topic}
            self._over("publish_flood", self._publishes, ident, cfg.publish_flood, ev, evidence)

    def _published(
        self, ev: MqttEvent, topic: str, retain: bool, username: str | None, via: str
    ) -> None:
        """Checks shared by PUBLISH and the will (which the broker publishes for the client)."""
        evidence: dict[str, EvidenceValue] = {"topic": topic, "username": username, "via": via}
        if username not in self._operators and self._command(topic):
            self._hit("command_publish", self._ident(ev), ev, evidence)
        if retain and not any(match(topic) for match in self._retain_ok):
            self._hit("retained_abuse", self._ident(ev), ev, evidence)

    def _malformed(self, ev: MqttEvent, p: Malformed) -> None:
        evidence: dict[str, EvidenceValue] = {"last": f"{p.reason}: {p.detail}"[:160]}
        alert = self._log.hit(
            "malformed_packets",
            ev.src.ip,
            ev.src.ip,
            self._device_of(ev.src.ip),
            ev.ts,
            ev.ts,
            1,
            evidence,
        )
        seen = alert.evidence.get(p.reason)
        alert.evidence[p.reason] = (seen if isinstance(seen, int) else 0) + 1

    # --- host windows ----------------------------------------------------------------------

    def window(self, host: HostState, w: HostWindow, start: float, end: float) -> None:
        cfg, ip = self._cfg, ip_text(host.ip)

        def hit(kind: AlertKind, count: int, evidence: dict[str, EvidenceValue]) -> None:
            self._log.hit(kind, ip, ip, host.device, start, end, count, evidence)

        scanning = len(w.scan_dsts) >= cfg.scan_destinations
        if scanning:
            hit(
                "telnet_ssh_scan",
                len(w.scan_dsts),
                {
                    "telnet": w.telnet,
                    "ssh": w.ssh,
                    "destinations": _sample(map(ip_text, w.scan_dsts)),
                },
            )
        # A scan's targets are all "new": the scan alert already tells about them.
        unknown = {d: p for d, p in w.unknown.items() if not (scanning and d in w.scan_dsts)}
        if unknown:
            dests = _sample(f"{ip_text(d)}:{p}" for d, p in unknown.items())
            hit("new_destination", len(unknown), {"destinations": dests})
        base = host.baseline
        if len(base) >= cfg.baseline_windows:
            median = statistics.median(base)
            if (
                w.bytes_out > cfg.volume_factor * median
                and w.bytes_out - median >= cfg.volume_min_bytes
            ):
                hit(
                    "volume_anomaly",
                    1,
                    {"bytes_out": w.bytes_out, "baseline_median": median, "windows": len(base)},
                )
                return  # a flagged window does not teach the baseline
        base.append(w.bytes_out)
