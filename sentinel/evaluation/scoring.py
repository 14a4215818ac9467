"""Scoring alerts against ground truth (docs/scenarios.md, "How eval scores").

Matching rule: an alert matches a labelled event when the alert's device is one of the event's
devices and the alert starts inside the event's window, extended by a grace period after its end:
`event.start <= alert.start <= event.end + grace_s`. A traffic alert with no inventory device (a
brute force from an address, a subscription by a client) stands for the identities it names
(`AlertRecord.names`: its subject, the username and client id, the usernames a brute force
tried); it is about a device when one of those names is the device's id. An alert that started
before the event (already firing) does not match it. Alerts and events of different runs never
match.

- An attack is *detected* when at least one alert matches it; its time to detect is the first
  matching alert's start minus the attack's start (simulated seconds).
- A *true* alert matches at least one attack; a *false* alert matches none. A false alert that
  matches a benign event counts "during benign events", any other "on benign traffic".
- Per attack kind K: recall = detected K attacks / K attacks; precision = alerts matching a K
  attack / (those + the false alerts of the runs that contain a K attack); F1 from both.
- False alerts per 1,000 device-hours: on benign traffic, over the runs' device-hours outside
  benign events; during benign events, over the benign events' device-hours.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulators.anomalies import ATTACK, BENIGN, GroundTruth

DEFAULT_GRACE_S = 300.0


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert as eval sees it (from `sentinel.alerting.alerts.Alert`)."""

    detector: str
    device_id: str
    start: float
    end: float | None = None
    severity: str = ""
    summary: str = ""
    # Identities a device-less traffic alert names (see the matching rule); empty otherwise.
    names: tuple[str, ...] = ()

    def about(self, devices: Sequence[str]) -> bool:
        return self.device_id in devices or any(n in devices for n in self.names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "device_id": self.device_id,
            "start": self.start,
            "end": self.end,
            "severity": self.severity,
            "summary": self.summary,
            "names": list(self.names),
        }


@dataclass(frozen=True)
class RunOutcome:
    """One run (a scenario on one fleet and span): its truth and the alerts it raised."""

    name: str
    truth: Sequence[GroundTruth]
    alerts: Sequence[AlertRecord]
    devices: int
    span_s: float


def matches(alert: AlertRecord, event: GroundTruth, grace_s: float) -> bool:
    return alert.about(event.devices) and event.start <= alert.start <= event.end + grace_s


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _f1(p: float | None, r: float | None) -> float | None:
    if r is None:
        return None
    if r == 0:
        return 0.0
    if p is None or p + r == 0:
        return None
    return 2 * p * r / (p + r)


def _pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.array(values), q)) if values else None


@dataclass
class KindScore:
    kind: str
    events: int = 0
    detected: int = 0
    true_alerts: int = 0
    false_alerts: int = 0  # false alerts of the runs that contain this kind
    ttd_s: list[float] = field(default_factory=list)

    @property
    def recall(self) -> float | None:
        return _ratio(self.detected, self.events)

    @property
    def precision(self) -> float | None:
        return _ratio(self.true_alerts, self.true_alerts + self.false_alerts)

    @property
    def f1(self) -> float | None:
        return _f1(self.precision, self.recall)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "events": self.events,
            "detected": self.detected,
            "true_alerts": self.true_alerts,
            "false_alerts": self.false_alerts,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "ttd_p50_s": _pct(self.ttd_s, 50),
            "ttd_p95_s": _pct(self.ttd_s, 95),
        }


@dataclass
class BenignScore:
    kind: str
    events: int = 0
    device_hours: float = 0.0
    false_alerts: int = 0

    @property
    def per_1000_device_hours(self) -> float | None:
        return _ratio(1000.0 * self.false_alerts, self.device_hours)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "events": self.events,
            "device_hours": round(self.device_hours, 3),
            "false_alerts": self.false_alerts,
            "false_alerts_per_1000_device_hours": self.per_1000_device_hours,
        }


@dataclass
class Score:
    grace_s: float
    kinds: dict[str, KindScore]
    benign: dict[str, BenignScore]
    alerts: int
    true_alerts: int
    false_alerts_traffic: int
    false_alerts_benign: int
    device_hours: float
    benign_device_hours: float
    days: float
    attacks: int
    detected: int
    by_detector: dict[str, Counter[str]]

    @property
    def false_alerts(self) -> int:
        return self.false_alerts_traffic + self.false_alerts_benign

    @property
    def precision(self) -> float | None:
        return _ratio(self.true_alerts, self.alerts)

    @property
    def recall(self) -> float | None:
        return _ratio(self.detected, self.attacks)

    @property
    def f1(self) -> float | None:
        return _f1(self.precision, self.recall)

    @property
    def fa_traffic_per_1000_dh(self) -> float | None:
        return _ratio(
            1000.0 * self.false_alerts_traffic, self.device_hours - self.benign_device_hours
        )

    @property
    def fa_benign_per_1000_dh(self) -> float | None:
        return _ratio(1000.0 * self.false_alerts_benign, self.benign_device_hours)

    @property
    def alerts_per_day(self) -> float | None:
        return _ratio(self.alerts, self.days)

    def to_dict(self) -> dict[str, Any]:
        return {
            "grace_s": self.grace_s,
            "rule": (
                "(alert.device or a name of a device-less traffic alert) in event.devices "
                "and event.start <= alert.start <= event.end + grace_s"
            ),
            "attacks": {k: v.to_dict() for k, v in sorted(self.kinds.items())},
            "benign_events": {k: v.to_dict() for k, v in sorted(self.benign.items())},
            "overall": {
                "alerts": self.alerts,
                "true_alerts": self.true_alerts,
                "false_alerts_on_benign_traffic": self.false_alerts_traffic,
                "false_alerts_during_benign_events": self.false_alerts_benign,
                "attacks": self.attacks,
                "detected": self.detected,
                "precision": self.precision,
                "recall": self.recall,
                "f1": self.f1,
                "device_hours": round(self.device_hours, 3),
                "benign_event_device_hours": round(self.benign_device_hours, 3),
                "false_alerts_per_1000_device_hours_benign_traffic": self.fa_traffic_per_1000_dh,
                "false_alerts_per_1000_device_hours_benign_events": self.fa_benign_per_1000_dh,
                "simulated_days": self.days,
                "alerts_per_day": self.alerts_per_day,
            },
            "by_detector": {
                str(k): {str(n): c for n, c in v.items()}
                for k, v in sorted(self.by_detector.items())
            },
        }


def score(runs: Sequence[RunOutcome], grace_s: float = DEFAULT_GRACE_S) -> Score:
    if not (math.isfinite(grace_s) and grace_s >= 0):
        raise ValueError(f"grace_s must be >= 0, got {grace_s}")
    kinds: dict[str, KindScore] = {}
    benign: dict[str, BenignScore] = {}
    by_detector: dict[str, Counter[str]] = defaultdict(Counter)
    totals = Counter[str]()
    device_hours = benign_dh = days = 0.0
    for run in runs:
        attacks = [t for t in run.truth if t.label == ATTACK]
        benigns = [t for t in run.truth if t.label == BENIGN]
        device_hours += run.devices * run.span_s / 3600.0
        days += run.span_s / 86_400.0
        for t in benigns:
            b = benign.setdefault(t.kind, BenignScore(t.kind))
            b.events += 1
            dh = len(t.devices) * (t.end - t.start) / 3600.0
            b.device_hours += dh
            benign_dh += dh
        first_hit: dict[int, float] = {}
        run_false = 0
        true_kinds_of_alert: list[set[str]] = []
        for a in run.alerts:
            hit = {i for i, t in enumerate(attacks) if matches(a, t, grace_s)}
            for i in hit:
                first_hit[i] = min(first_hit.get(i, math.inf), a.start)
            by_detector[a.detector]["alerts"] += 1
            totals["alerts"] += 1
            if hit:
                by_detector[a.detector]["true"] += 1
                totals["true"] += 1
                true_kinds_of_alert.append({attacks[i].kind for i in hit})
                continue
            run_false += 1
            by_detector[a.detector]["false"] += 1
            during = [t for t in benigns if matches(a, t, grace_s)]
            if during:
                totals["false_benign"] += 1
                for kind in {t.kind for t in during}:
                    benign[kind].false_alerts += 1
            else:
                totals["false_traffic"] += 1
        for i, t in enumerate(attacks):
            k = kinds.setdefault(t.kind, KindScore(t.kind))
            k.events += 1
            totals["attacks"] += 1
            if i in first_hit:
                k.detected += 1
                totals["detected"] += 1
                k.ttd_s.append(first_hit[i] - t.start)
        for kind in {t.kind for t in attacks}:
            kinds[kind].false_alerts += run_false
            kinds[kind].true_alerts += sum(1 for ks in true_kinds_of_alert if kind in ks)
    return Score(
        grace_s=grace_s,
        kinds=kinds,
        benign=benign,
        alerts=totals["alerts"],
        true_alerts=totals["true"],
        false_alerts_traffic=totals["false_traffic"],
        false_alerts_benign=totals["false_benign"],
        device_hours=device_hours,
        benign_device_hours=benign_dh,
        days=days,
        attacks=totals["attacks"],
        detected=totals["detected"],
        by_detector=dict(by_detector),
    )
