"""Comparing the alerts of two configurations, and counting them per day.

Matching rule: an alert of the new configuration and one of the baseline match when they come
from the same detector name, on the same device (tenant, zone, kind, device id), and their
active spans overlap once each is widened by `tolerance_s`:
`new.start <= base.end + tolerance_s and base.start <= new.end + tolerance_s`, where an alert
still firing at the end of the window ends there. Matching is one to one, earliest first:
new alerts left without a partner are *gained*, baseline alerts left without one are *lost*,
so `new alerts - baseline alerts = gained - lost` for every detector.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from detectors.model import DeviceRef
from sentinel.alerting.alerts import Alert
from sentinel.evaluation.scoring import AlertRecord

DEFAULT_TOLERANCE_S = 300.0
RULE = (
    "same detector and device, and new.start <= base.end + tolerance_s and "
    "base.start <= new.end + tolerance_s (a still-firing alert ends at the window's end); "
    "one to one, earliest first"
)


@dataclass(frozen=True, slots=True)
class FiredAlert:
    """An alert a configuration raised during the backtest; `end` None: still firing."""

    detector: str
    device: DeviceRef
    start: float
    end: float | None = None
    severity: str = ""
    summary: str = ""

    @classmethod
    def of(cls, alert: Alert) -> FiredAlert:
        return cls(
            detector=alert.source.name,
            device=alert.device,
            start=alert.starts_at,
            end=alert.ends_at,
            severity=alert.source.severity,
            summary=alert.summary,
        )

    @property
    def key(self) -> tuple[str, DeviceRef]:
        return self.detector, self.device

    def end_or(self, horizon: float) -> float:
        return horizon if self.end is None else self.end

    def record(self) -> AlertRecord:
        """As `sentinel eval` scores it."""
        return AlertRecord(
            self.detector, self.device.device_id, self.start, self.end, self.severity, self.summary
        )

    def to_dict(self) -> dict[str, Any]:
        d = self.device
        return {
            "detector": self.detector,
            "tenant": d.tenant,
            "zone": d.zone,
            "kind": d.kind,
            "device_id": d.device_id,
            "start": self.start,
            "end": self.end,
            "severity": self.severity,
            "summary": self.summary,
        }


@dataclass
class DetectorDelta:
    new: int = 0
    baseline: int = 0
    matched: int = 0
    gained: int = 0
    lost: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "new": self.new,
            "baseline": self.baseline,
            "matched": self.matched,
            "gained": self.gained,
            "lost": self.lost,
        }


@dataclass
class Comparison:
    tolerance_s: float
    matched: list[tuple[FiredAlert, FiredAlert]] = field(default_factory=list)  # (new, base)
    gained: list[FiredAlert] = field(default_factory=list)
    lost: list[FiredAlert] = field(default_factory=list)
    by_detector: dict[str, DetectorDelta] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": RULE,
            "tolerance_s": self.tolerance_s,
            "matched": len(self.matched),
            "gained": [a.to_dict() for a in self.gained],
            "lost": [a.to_dict() for a in self.lost],
            "by_detector": {k: v.to_dict() for k, v in sorted(self.by_detector.items())},
        }


def _by_key(alerts: Iterable[FiredAlert]) -> dict[tuple[str, DeviceRef], list[FiredAlert]]:
    out: dict[tuple[str, DeviceRef], list[FiredAlert]] = defaultdict(list)
    for a in alerts:
        out[a.key].append(a)
    for group in out.values():
        group.sort(key=lambda a: (a.start, a.end_or(float("inf"))))
    return out


def compare(
    new: Sequence[FiredAlert],
    baseline: Sequence[FiredAlert],
    *,
    horizon: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> Comparison:
    """Gained and lost alerts of `new` against `baseline` (the module's matching rule).

    `horizon` is the end of the backtest window, where still-firing alerts end.
    """
    if not tolerance_s >= 0:
        raise ValueError(f"tolerance_s must be >= 0, got {tolerance_s}")
    out = Comparison(tolerance_s)
    deltas: dict[str, DetectorDelta] = defaultdict(DetectorDelta)
    news, bases = _by_key(new), _by_key(baseline)
    for key in sorted(news.keys() | bases.keys(), key=lambda k: (k[0], *k[1])):
        ns, bs = news.get(key, []), bases.get(key, [])
        delta = deltas[key[0]]
        delta.new += len(ns)
        delta.baseline += len(bs)
        # One alert per detector and device is active at a time, so each list is a sequence
        # of disjoint spans: a two-pointer walk pairs them as much as they can be.
        i = j = 0
        while i < len(ns) and j < len(bs):
            n, b = ns[i], bs[j]
            if (
                n.start <= b.end_or(horizon) + tolerance_s
                and b.start <= n.end_or(horizon) + tolerance_s
            ):
                out.matched.append((n, b))
                delta.matched += 1
                i += 1
                j += 1
            elif n.end_or(horizon) + tolerance_s < b.start:
                out.gained.append(n)
                i += 1
            else:
                out.lost.append(b)
                j += 1
        out.gained += ns[i:]
        out.lost += bs[j:]
    for a in out.gained:
        deltas[a.detector].gained += 1
    for a in out.lost:
        deltas[a.detector].lost += 1
    out.gained.sort(key=lambda a: a.start)
    out.lost.sort(key=lambda a: a.start)
    out.by_detector = dict(deltas)
    return out


def days_between(since: float, until: float, tz: tzinfo) -> list[date]:
    """Every calendar day (in `tz`) that [since, until) touches."""
    first = datetime.fromtimestamp(since, tz).date()
    last = datetime.fromtimestamp(max(since, until - 1e-3), tz).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def per_day(
    alerts: Iterable[FiredAlert], days: Sequence[date], tz: tzinfo
) -> dict[str, Counter[str]]:
    """Alerts raised per day (by start, in `tz`) and detector; every day present, even empty."""
    out: dict[str, Counter[str]] = {d.isoformat(): Counter() for d in days}
    for a in alerts:
        label = datetime.fromtimestamp(a.start, tz).date().isoformat()
        out.setdefault(label, Counter())[a.detector] += 1
    return out
