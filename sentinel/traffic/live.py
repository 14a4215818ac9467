"""The agent's live traffic sources (`[traffic]`, docs/traffic.md, "In the agent").

- `broker_log_file`: Mosquitto's log, followed; its lines become MQTT events for the same
  detections as a capture (`sentinel.traffic.brokerlog`, `Analyzer.event`).
- `sys_topics`: the broker's `$SYS/#` as Prometheus gauges (`sentinel.traffic.systopics`).
- `capture_iface`: a live capture (`sentinel.traffic.capture`) through an `Analyzer`.
- `sentinel capture --agent`: a capture in another process, fed over the HTTP API
  (`sentinel.traffic.feed`) into the same alert bridge and pipeline.

Traffic alerts reach the agent's alert book through `Pipeline.raise_alerts` (so InfluxDB and
Alertmanager get them like any alert) via `AlertBridge`; the flow features of inventory devices
enter `Pipeline.ingest` as records, stored and scored like telemetry.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import weakref
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import aiomqtt
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from detectors.model import DeviceRef, EvidenceValue, Record, Transition
from sentinel.alerting.alerts import AlertSource, alertname_for
from sentinel.backoff import Backoff
from sentinel.config import Config, MqttConfig, TrafficSourcesConfig
from sentinel.decode import _DEVICE_ID, _TENANT, _ZONE
from sentinel.errors import ConfigError
from sentinel.metrics import Metrics
from sentinel.pipeline import Pipeline
from sentinel.traffic.alerts import TrafficAlert
from sentinel.traffic.analyzer import Analyzer
from sentinel.traffic.brokerlog import EVENT_NAMES, BrokerLogEvents, LogFollower
from sentinel.traffic.capture import LiveCaptureError, LiveSocket, pump
from sentinel.traffic.config import ALERT_KINDS, AlertKind
from sentinel.traffic.flows import FlowFeatures
from sentinel.traffic.inventory import InventoryError, load_inventory
from sentinel.traffic.systopics import BrokerGauges

log = structlog.get_logger(__name__)

TRAFFIC_KIND = "_traffic"  # `kind` of alerts with no inventory device; never a device kind
ORIGINS = ("broker_log", "capture")
_ORIGIN_TEXT = {"broker_log": "in the broker log", "capture": "in the live capture"}
SOURCES = ("broker_log", "sys_topics", "capture")
_POLL_S = 0.1  # broker log: how often the file is checked
_RETRY_S = 1.0  # after an unexpected error in a source's loop
_READ_BYTES = 256 << 10  # broker log bytes per turn (~3,000 lines), then the loop gets a turn
_TEXT = 256  # attacker-controlled strings in evidence are cut to this
_SUMMARY_SUBJECT = 80
_FEED_CLOCK_S = 1.0  # fed alerts: how often quiet ones are checked for resolution

_TITLES: dict[AlertKind, str] = {
    "brute_force_ip": "MQTT login brute force from {}",
    "brute_force_user": "MQTT login brute force on user {}",
    "reconnect_storm": "Reconnect storm by client {}",
    "client_id_multi_ip": "Client id {} connects from several IPs",
    "forbidden_subscription": "Forbidden subscription by client {}",
    "command_publish": "Command published by non-operator client {}",
    "retained_abuse": "Retained message or will abuse by client {}",
    "oversized_payload": "Oversized MQTT payload from client {}",
    "malformed_packets": "Malformed MQTT packets from {}",
    "slowite": "SlowITe: connections holding long keep-alives from {}",
    "publish_flood": "Publish flood by client {}",
    "telnet_ssh_scan": "Telnet/SSH scan from {}",
    "new_destination": "New destinations contacted by {}",
    "volume_anomaly": "Traffic volume anomaly from {}",
}
assert set(_TITLES) == set(ALERT_KINDS)


def printable(text: str, limit: int) -> str:
    """An attacker's string made safe to show: control characters replaced, length cut."""
    cut = text[:limit]
    clean = "".join(c if c.isprintable() else "?" for c in cut)
    return clean + ("…" if len(text) > limit else "")


def alert_source(kind: AlertKind, severity: str) -> AlertSource:
    """One alert source per kind: `traffic-brute-force-ip` → alertname `TrafficBruteForceIp`."""
    name = "traffic-" + kind.replace("_", "-")
    return AlertSource(
        name=name, alertname=alertname_for(name), detector_type="traffic", severity=severity
    )


def net_record(device: DeviceRef, ts: float, metrics: Mapping[str, float]) -> Record:
    """A device's flow window as a record; metrics prefixed `net_` (what the network saw,
    beside what the device reports)."""
    return Record(device, ts, {f"net_{k}": v for k, v in metrics.items()})


def feature_record(features: FlowFeatures) -> Record | None:
    """An inventory device's window as a record (None for other hosts)."""
    record = features.to_record()
    return None if record is None else net_record(record.device, record.ts, record.metrics)


def subject_digest(subject: str) -> bytes:
    """What places an alert without a device in a bucket (see `AlertBridge`)."""
    return hashlib.sha256(subject.encode("utf-8", "replace")).digest()


@dataclass(slots=True)
class _Active:
    source: AlertSource
    seen: float  # monotonic time of the last hit
    last: float  # event time of the last hit


class AlertBridge:
    """Traffic alerts into the agent's alert transitions.

    An alert is about its inventory device or, without one, about a placeholder device with
    bounded labels: tenant and zone from the config, kind `_traffic`, device_id `_s` and one
    of `subject_buckets` buckets of a hash of the subject. The subject itself (a client id,
    a username, an IP: attacker-controlled) appears only in the summary and the evidence,
    cut. Hits keep the alert firing; `resolve_after_s` without one resolves it.
    """

    def __init__(self, config: TrafficSourcesConfig) -> None:
        self._cfg = config
        self._touched: dict[int, tuple[TrafficAlert, str, bytes | None]] = {}
        self.active: dict[tuple[AlertKind, DeviceRef], _Active] = {}

    def touch(self, alert: TrafficAlert, origin: str, digest: bytes | None = None) -> None:
        """A hit on `alert`. `digest`: `subject_digest` of the whole subject, when `alert`
        carries it cut (a fed alert), so that it lands in the same bucket."""
        self._touched[id(alert)] = (alert, origin, digest)

    def device(self, alert: TrafficAlert, digest: bytes | None = None) -> DeviceRef:
        if alert.device is not None:
            return alert.device
        digest = digest or subject_digest(alert.subject)
        bucket = int.from_bytes(digest[:4], "big") % self._cfg.subject_buckets
        return DeviceRef(self._cfg.tenant, self._cfg.zone, TRAFFIC_KIND, f"_s{bucket:03x}")

    def flush(self, mono: float, now: float) -> list[tuple[AlertSource, list[Transition]]]:
        """The transitions since the last flush: alerts that started, and quiet ones resolved."""
        out: dict[AlertSource, list[Transition]] = {}
        touched, self._touched = self._touched, {}
        for alert, origin, digest in touched.values():
            key = (alert.kind, self.device(alert, digest))
            active = self.active.get(key)
            if active is not None:
                active.seen, active.last = mono, max(active.last, alert.last)
                continue
            source = alert_source(alert.kind, alert.severity)
            self.active[key] = _Active(source, mono, alert.last)
            out.setdefault(source, []).append(
                Transition(
                    key[1], True, alert.first, self.summary(alert, origin), evidence(alert, origin)
                )
            )
        quiet = self._cfg.resolve_after_s
        for key, active in list(self.active.items()):
            if mono - active.seen >= quiet:
                del self.active[key]
                ended = max(now, active.last)
                out.setdefault(active.source, []).append(
                    Transition(
                        key[1],
                        False,
                        ended,
                        f"quiet for {quiet:g} s",
                        {"value": f"quiet {quiet:g} s"},
                    )
                )
        return list(out.items())

    @staticmethod
    def summary(alert: TrafficAlert, origin: str) -> str:
        title = _TITLES[alert.kind].format(printable(alert.subject, _SUMMARY_SUBJECT))
        plural = "s" if alert.count != 1 else ""
        where = _ORIGIN_TEXT.get(origin, origin)
        src = printable(alert.src, 64)
        return f"{title} ({alert.count} event{plural}, last from {src}, {where})"


def evidence(alert: TrafficAlert, origin: str) -> dict[str, EvidenceValue]:
    out: dict[str, EvidenceValue] = {
        printable(k, 64): printable(v, _TEXT) if isinstance(v, str) else v
        for k, v in alert.evidence.items()
    }
    out.update(
        traffic_kind=alert.kind,
        subject=printable(alert.subject, _TEXT),
        src=printable(alert.src, 64),
        count=alert.count,
        first=alert.first,
        last=alert.last,
        origin=origin,
    )
    return out


class TrafficMetrics:
    """The traffic sources' metrics, on the agent's registry (once per registry)."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, TrafficMetrics]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.source_up = Gauge(
            "sentinel_traffic_source_up",
            "1 while a traffic source runs (broker log readable, $SYS subscribed, capturing)",
            ["source"],
            registry=r,
        )
        self.log_lines = Counter(
            "sentinel_broker_log_lines_total",
            "Lines of the broker's log, by what they were",
            ["event"],
            registry=r,
        )
        self.capture_packets = Counter(
            "sentinel_capture_packets_total", "Frames analyzed by the live capture", registry=r
        )
        self.capture_drops = Counter(
            "sentinel_capture_kernel_drops_total",
            "Frames the kernel dropped before the capture read them",
            registry=r,
        )
        self.feature_records = Counter(
            "sentinel_traffic_feature_records_total",
            "Per-device flow feature windows ingested as records",
            registry=r,
        )
        self.feed_items = Counter(
            "sentinel_traffic_feed_items_total",
            "Alert hits and feature windows fed by `sentinel capture --agent`, by result",
            ["item", "result"],
            registry=r,
        )
        self.broker = BrokerGauges(r)
        for source in SOURCES:
            self.source_up.labels(source).set(0)
        for event in EVENT_NAMES:
            self.log_lines.labels(event)

    @classmethod
    def of(cls, registry: CollectorRegistry) -> TrafficMetrics:
        metrics = cls._by_registry.get(registry)
        if metrics is None:
            metrics = cls._by_registry[registry] = cls(registry)
        return metrics


def device_problem(d: DeviceRef, kinds: tuple[str, ...]) -> str | None:
    """Why a device could not be a telemetry device (its values become tags), or None."""
    if d.kind not in kinds:
        return f"device {d.device_id[:64]!r}: kind {d.kind[:64]!r} is not in validation.kinds"
    if not (
        _TENANT.fullmatch(d.tenant)
        and _ZONE.fullmatch(d.zone)
        and _DEVICE_ID.fullmatch(d.device_id)
    ):
        return f"device {d.device_id[:64]!r}: tenant, zone or id not valid"
    return None


def load_devices(path: Path, kinds: tuple[str, ...]) -> dict[bytes, DeviceRef]:
    """The inventory, each device checked as telemetry would be (its values become tags)."""
    try:
        devices = load_inventory(path)
    except InventoryError as exc:
        raise ConfigError(str(path), [f"traffic.inventory_file: {exc.reason}"]) from None
    problems = []
    for d in devices.values():
        problem = device_problem(d, kinds)
        if problem is not None:
            problems.append(problem)
        if len(problems) >= 10:
            break
    if problems:
        raise ConfigError(str(path), [f"traffic.inventory_file: {p}" for p in problems])
    return devices


class TrafficSources:
    """The enabled sources of one agent; each `run_*` is a long-lived task of its TaskGroup.

    One per agent, with one alert bridge: an attack seen by two sources (the broker log and a
    fed capture) is one alert, resolved once every source has gone quiet about it."""

    _fed: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, TrafficSources]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, config: Config, pipeline: Pipeline, metrics: Metrics) -> None:
        self.cfg = config.traffic
        self.mqtt: MqttConfig = config.mqtt
        self.pipeline = pipeline
        self.metrics = TrafficMetrics.of(metrics.registry)
        inventory = self.cfg.inventory_file
        self.inventory = (
            load_devices(inventory, config.validation.kinds) if inventory is not None else None
        )
        self.bridge = AlertBridge(self.cfg)
        self._records: list[Record] = []
        self.fed = False  # an HTTP feed (sentinel.traffic.feed) delivers through these

    @classmethod
    def for_feed(cls, config: Config, pipeline: Pipeline, metrics: Metrics) -> TrafficSources:
        """The agent's sources, made for its HTTP feed; `traffic_tasks` later finds the same
        ones (the agent's metrics registry tells agents apart)."""
        sources = cls._fed.get(metrics.registry)
        if sources is None or sources.pipeline is not pipeline:
            sources = cls._fed[metrics.registry] = cls(config, pipeline, metrics)
        sources.fed = True
        return sources

    @classmethod
    def fed_sources(cls, pipeline: Pipeline, metrics: Metrics) -> TrafficSources | None:
        sources = cls._fed.get(metrics.registry)
        return sources if sources is not None and sources.pipeline is pipeline else None

    def tasks(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        cfg, tasks = self.cfg, []
        if self.fed:
            tasks.append(("traffic-feed", self.run_feed_clock()))
        if cfg.broker_log_file is not None:
            tasks.append(("traffic-broker-log", self.run_broker_log(cfg.broker_log_file)))
        if cfg.sys_topics:
            tasks.append(("traffic-sys-topics", self.run_sys_topics()))
        if cfg.capture_iface is not None:
            tasks.append(("traffic-capture", self.run_capture(cfg.capture_iface)))
        return tasks

    def analyzer(self, origin: str) -> Analyzer:
        return Analyzer(
            self.cfg,
            self.inventory,
            keep_features=False,
            keep_alerts=False,
            on_alert=lambda alert, _opened: self.bridge.touch(alert, origin),
            on_features=self._features if origin == "capture" else None,
        )

    def _features(self, features: FlowFeatures) -> None:
        record = feature_record(features)
        if record is not None:
            self._records.append(record)

    async def feed(
        self, hits: list[tuple[TrafficAlert, bytes | None]], windows: list[Record]
    ) -> None:
        """Alert hits and feature records of a capture running elsewhere (already checked by
        sentinel.traffic.feed), delivered as this agent's own capture delivers its own."""
        for alert, digest in hits:
            self.bridge.touch(alert, "capture", digest)
        self._records += windows
        await self.deliver()

    async def deliver(self) -> None:
        """Alert transitions and feature records gathered so far, into the pipeline."""
        for source, transitions in self.bridge.flush(time.monotonic(), time.time()):
            await self.pipeline.raise_alerts(source, transitions)
        if self._records:
            records, self._records = self._records, []
            await self.pipeline.ingest(records)
            self.metrics.feature_records.inc(len(records))

    # --- broker log ------------------------------------------------------------------------

    async def run_broker_log(self, path: Path) -> None:
        cfg = self.cfg
        follower = LogFollower(
            path,
            from_start=cfg.broker_log_from_start,
            max_line_bytes=cfg.broker_log_max_line_bytes,
            max_read_bytes=max(_READ_BYTES, cfg.broker_log_max_line_bytes),
        )
        events = BrokerLogEvents()
        analyzer = self.analyzer("broker_log")
        up = self.metrics.source_up.labels("broker_log")
        counted: dict[str, int] = {}
        reported: str | None = None
        log.info(
            "traffic_broker_log_following", path=str(path), from_start=cfg.broker_log_from_start
        )
        try:
            while True:
                try:
                    lines = follower.poll()
                    now = time.time()
                    for line in lines:
                        for ev in events.feed(line, now):
                            analyzer.event(ev)
                    analyzer.tick(now)
                    events.counts["truncated"] = follower.truncated_lines
                    for name, n in events.counts.items():
                        if n > counted.get(name, 0):
                            self.metrics.log_lines.labels(name).inc(n - counted.get(name, 0))
                            counted[name] = n
                    up.set(1 if follower.error is None and follower.opened else 0)
                    if follower.error != reported:
                        reported = follower.error
                        if reported is not None:
                            log.warning("traffic_broker_log_unreadable", error=reported)
                        else:
                            log.info("traffic_broker_log_open", path=str(path))
                    await self.deliver()
                except Exception:  # a bug must not stop the agent: log it, go on
                    log.exception("traffic_broker_log_failed")
                    await asyncio.sleep(_RETRY_S)
                    continue
                await asyncio.sleep(0 if follower.backlog else _POLL_S)
        finally:
            follower.close()
            up.set(0)

    # --- $SYS ------------------------------------------------------------------------------

    async def run_sys_topics(self) -> None:
        mq = self.mqtt
        backoff = Backoff(mq.reconnect_min_s, mq.reconnect_max_s)
        gauges = self.metrics.broker
        up = self.metrics.source_up.labels("sys_topics")
        try:
            while True:
                try:
                    async with aiomqtt.Client(
                        mq.host,
                        mq.port,
                        username=mq.username,
                        password=mq.secret(),
                        identifier=f"{mq.client_id}-sys",
                        clean_session=True,
                        keepalive=mq.keepalive_s,
                        tls_context=mq.tls_context(),
                    ) as client:
                        await client.subscribe("$SYS/#", qos=0)
                        up.set(1)
                        backoff.reset()
                        log.info("traffic_sys_subscribed", broker=f"{mq.host}:{mq.port}")
                        async for message in client.messages:
                            payload = message.payload
                            if isinstance(payload, bytes | bytearray):
                                gauges.update(message.topic.value, bytes(payload), time.time())
                except aiomqtt.MqttError as exc:
                    up.set(0)
                    delay = backoff.next_delay()
                    log.warning(
                        "traffic_sys_disconnected", error=str(exc), retry_in_s=round(delay, 2)
                    )
                    await asyncio.sleep(delay)
                except (ConfigError, asyncio.CancelledError):
                    raise
                except Exception:  # a bug must not stop the agent: log it, go on
                    up.set(0)
                    log.exception("traffic_sys_failed")
                    await asyncio.sleep(backoff.next_delay())
        finally:
            up.set(0)

    # --- fed capture -----------------------------------------------------------------------

    async def run_feed_clock(self) -> None:
        """Resolves fed alerts once quiet, even when the capture feeding them has stopped."""
        while True:
            await asyncio.sleep(_FEED_CLOCK_S)
            try:
                await self.deliver()
            except Exception:  # a bug must not stop the agent: log it, go on
                log.exception("traffic_feed_delivery_failed")

    # --- capture ---------------------------------------------------------------------------

    async def run_capture(self, iface: str) -> None:
        up = self.metrics.source_up.labels("capture")
        try:
            live = LiveSocket(iface, self.cfg.bpf)
        except LiveCaptureError as exc:
            # The agent goes on with its other sources; the metric and this error say why.
            log.error("traffic_capture_failed", key="traffic.capture_iface", error=str(exc))
            return
        analyzer = self.analyzer("capture")
        log.info("traffic_capture_started", iface=iface, bpf=self.cfg.bpf)
        up.set(1)
        metrics = self.metrics

        async def tick(frames: int, drops: int) -> None:
            metrics.capture_packets.inc(frames)
            metrics.capture_drops.inc(drops)
            try:
                await self.deliver()
            except Exception:
                log.exception("traffic_capture_delivery_failed")

        try:
            while True:
                try:
                    await pump(live, analyzer, tick)
                except Exception:  # a bug must not stop the agent: log it, go on
                    log.exception("traffic_capture_error")
                    await asyncio.sleep(_RETRY_S)
        finally:
            live.close()
            up.set(0)


def traffic_tasks(
    config: Config, pipeline: Pipeline, metrics: Metrics
) -> list[tuple[str, Coroutine[Any, Any, None]]]:
    """(task name, coroutine) for each enabled `[traffic]` source, and the HTTP feed's clock
    when the agent serves one; none by default."""
    sources = TrafficSources.fed_sources(pipeline, metrics)
    if sources is None:
        if not config.traffic.enabled:
            return []
        sources = TrafficSources(config, pipeline, metrics)
    return sources.tasks()
