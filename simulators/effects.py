"""What a scenario does to the message stream: per-device effects and scheduled messages.

The generator hands every report of a targeted device to that device's effects, in order, as a
mutable `Report`: an effect may rewrite its metrics or `info`, drop it, or add messages right
after it on the same topic. Devices without effects take the generator's fast path.

Effects are pure functions of the report (and, for `Replay`, of the device's earlier payloads,
which the generator keeps), so a stream is the same however often it is generated.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import orjson

from simulators.anomalies import Anomaly, Metrics
from simulators.fleet import Device
from simulators.messages import Message

_MASK64 = 2**64 - 1


def draw(key: int, counter: int, stream: int) -> float:
    """A uniform draw in [0, 1) from (key, counter, stream): SplitMix64 on Python ints."""
    x = (key ^ (counter * 0x9E3779B97F4A7C15) ^ (stream * 0xD1B54A32D192ED03)) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    x ^= x >> 31
    return (x >> 11) / 2**53


@dataclass(slots=True)
class Report:
    """One telemetry report of a targeted device, while its effects work on it."""

    device: Device
    ts: float  # payload ts (the device's clock): effect windows are in this clock
    seq: int
    metrics: Metrics
    info: dict[str, str]
    drop: bool = False
    # Further payloads on the device's topic, published right after this report.
    extras: list[bytes] = field(default_factory=list)
    # The device's previous payloads, newest last (kept only for devices with a Replay effect).
    history: deque[bytes] | None = None

    def payload(self) -> bytes:
        return encode(self.device.device_id, self.ts, self.seq, self.metrics, self.info)


def encode(device_id: str, ts: float, seq: int, metrics: Metrics, info: Mapping[str, str]) -> bytes:
    return orjson.dumps(
        {"device_id": device_id, "ts": ts, "seq": seq, "metrics": metrics, "info": info}
    )


class Effect(Protocol):
    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...

    def applies(self, ts: float) -> bool:
        """Whether `apply` runs on a report at payload time `ts`."""
        ...

    def apply(self, report: Report) -> None: ...


@dataclass(frozen=True, slots=True)
class _Window:
    start: float
    end: float  # math.inf: until the end of the run

    def applies(self, ts: float) -> bool:
        return self.start <= ts < self.end


Op = Literal["scale", "add", "set"]


@dataclass(frozen=True, slots=True)
class MetricValue:
    """A constant (low == high) or a uniform draw in [low, high] per report."""

    name: str
    low: float
    high: float

    def value(self, key: int, seq: int, stream: int) -> float:
        if self.low == self.high:
            return self.low
        return self.low + (self.high - self.low) * draw(key, seq, stream)


def _keep_type(old: float, new: float) -> float:
    """Integers stay integers on the wire (counters, flags); floats keep 3 decimals."""
    if isinstance(old, int) and not isinstance(old, bool):
        return round(new)
    return round(new, 3)


def _apply_op(op: Op, values: Sequence[MetricValue], metrics: Metrics, key: int, seq: int) -> None:
    for i, v in enumerate(values):
        old = metrics.get(v.name)
        if old is None:
            continue  # the effect targets a metric this sub-type does not report
        x = v.value(key, seq, i)
        new = old * x if op == "scale" else old + x if op == "add" else x
        metrics[v.name] = _keep_type(old, new)


@dataclass(frozen=True, slots=True)
class MetricOp(_Window):
    """Scale, add to, or set metrics while active."""

    op: Op = "set"
    values: tuple[MetricValue, ...] = ()
    key: int = 0

    def apply(self, report: Report) -> None:
        _apply_op(self.op, self.values, report.metrics, self.key, report.seq)


@dataclass(frozen=True, slots=True)
class Drift(_Window):
    """A metric drifts away from the truth: +`per_hour` (relative) per hour since the start."""

    metric: str = ""
    per_hour: float = 0.0

    def apply(self, report: Report) -> None:
        old = report.metrics.get(self.metric)
        if old is not None:
            factor = 1.0 + self.per_hour * (report.ts - self.start) / 3_600.0
            report.metrics[self.metric] = _keep_type(old, old * max(factor, 0.0))


@dataclass(frozen=True, slots=True)
class Silence(_Window):
    """The device sends nothing (power lost, camera dark, link cut)."""

    def apply(self, report: Report) -> None:
        report.drop = True


@dataclass(frozen=True, slots=True)
class Presence(_Window):
    """The device exists only inside the window (a rogue device that joins, then leaves)."""

    def applies(self, ts: float) -> bool:
        return True

    def apply(self, report: Report) -> None:
        if not self.start <= report.ts < self.end:
            report.drop = True


@dataclass(frozen=True, slots=True)
class InfoChange(_Window):
    """The `info` object changes (firmware, config hash, source IP, client id)."""

    fields: tuple[tuple[str, str], ...] = ()

    def apply(self, report: Report) -> None:
        report.info = {**report.info, **dict(self.fields)}


@dataclass(frozen=True, slots=True)
class Reboot(_Window):
    """The device restarted at `start`: its uptime counts from there (until the run ends)."""

    def apply(self, report: Report) -> None:
        if "uptime_s" in report.metrics:
            report.metrics["uptime_s"] = int(report.ts - self.start)


@dataclass(frozen=True, slots=True)
class Replay(_Window):
    """Each report is followed by a verbatim copy of the one sent `lag` reports before it
    (old seq, old ts): captured messages played back by an attacker."""

    lag: int = 30

    def apply(self, report: Report) -> None:
        h = report.history
        if h is not None and len(h) >= self.lag:
            report.extras.append(h[-self.lag])


@dataclass(frozen=True, slots=True)
class Impersonate(_Window):
    """Another client publishes on the device's topic: each report is followed by a forged
    one with the same seq, other `info` (client id, source IP) and altered metrics."""

    fields: tuple[tuple[str, str], ...] = ()
    op: Op = "scale"
    values: tuple[MetricValue, ...] = ()
    key: int = 0
    delay_s: float = 0.4

    def apply(self, report: Report) -> None:
        metrics = dict(report.metrics)
        _apply_op(self.op, self.values, metrics, self.key ^ 0x5A5A, report.seq)
        info = {**report.info, **dict(self.fields)}
        ts = round(report.ts + self.delay_s, 3)
        report.extras.append(encode(report.device.device_id, ts, report.seq, metrics, info))


@dataclass(frozen=True, slots=True)
class LegacyAnomaly:
    """An `Anomaly` (metrics rewrite inside its ground-truth window) as an effect."""

    anomaly: Anomaly

    @property
    def start(self) -> float:
        return self.anomaly.truth.start

    @property
    def end(self) -> float:
        return self.anomaly.truth.end

    def applies(self, ts: float) -> bool:
        return self.start <= ts < self.end

    def apply(self, report: Report) -> None:
        report.metrics = self.anomaly.apply(report.device, report.ts, report.metrics)


@dataclass(frozen=True, slots=True)
class BrokerAction:
    """Something a real MQTT client does against the broker at simulated time `ts`.

    `kind`: `bruteforce` (logins with wrong passwords), `subscribe` (wildcard subscriptions with a
    field device's credentials), `clone` (a device's client id connecting from another address).
    `params` are the action's parameters (JSON-able). Without a broker, `events()` says what the
    broker would have logged.
    """

    ts: float
    kind: str
    params: tuple[tuple[str, object], ...] = ()

    def param(self, name: str, default: object = None) -> object:
        return dict(self.params).get(name, default)

    def events(self) -> list[dict[str, object]]:
        p = dict(self.params)
        if self.kind == "bruteforce":
            return [
                {
                    "ts": self.ts,
                    "event": "connect_refused",
                    "username": p.get("username"),
                    "client_id": p.get("client_id"),
                    "src_ip": p.get("src_ip"),
                    "reason": "not authorised",
                }
            ]
        if self.kind == "subscribe":
            topics = p.get("topics")
            return [
                {
                    "ts": self.ts,
                    "event": "subscribe",
                    "username": p.get("username"),
                    "client_id": p.get("client_id"),
                    "src_ip": p.get("src_ip"),
                    "topic": t,
                    "granted": False,
                }
                for t in (topics if isinstance(topics, list) else [])
            ]
        return [
            {
                "ts": self.ts,
                "event": "connect",
                "username": p.get("username"),
                "client_id": p.get("client_id"),
                "src_ip": p.get("src_ip"),
                "note": "client id already connected from another address",
            }
        ]


@dataclass(frozen=True)
class StreamPlan:
    """Everything a scenario adds to a fleet's normal stream.

    - `effects`: per device id, the effects on its reports, in order;
    - `scheduled`: messages at given times (status changes, commands), sorted by `ts`;
      `Message.origin` says who publishes them when a real broker is used;
    - `extra_devices`: devices outside the inventory (rogue devices) that the stream includes;
    - `unannounced`: devices that publish no `online` status at the start;
    - `actions`: MQTT-layer actions against the broker, sorted by `ts`.
    """

    effects: Mapping[str, tuple[Effect, ...]] = field(default_factory=dict)
    scheduled: tuple[Message, ...] = ()
    extra_devices: tuple[Device, ...] = ()
    unannounced: frozenset[str] = frozenset()
    actions: tuple[BrokerAction, ...] = ()

    def history_depth(self, device_id: str) -> int:
        """How many earlier payloads the generator keeps for this device (0: none)."""
        lags = [e.lag for e in self.effects.get(device_id, ()) if isinstance(e, Replay)]
        return max(lags, default=0)


EMPTY_PLAN = StreamPlan()
INF = math.inf
