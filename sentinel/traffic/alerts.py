"""Traffic alerts, the log that merges repeated hits, and the sliding counters behind them."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from detectors.model import DeviceRef, EvidenceValue
from sentinel.traffic.config import AlertKind, TrafficConfig


@dataclass(slots=True)
class TrafficAlert:
    """What happened (kind), about whom (subject: an IP, a client id or a username), when."""

    kind: AlertKind
    severity: str
    subject: str
    src: str  # source IP of the latest offending traffic
    device: DeviceRef | None  # the inventory device at `src`, when known
    first: float
    last: float
    count: int  # offending events (or destinations, for the per-window kinds)
    evidence: dict[str, EvidenceValue]

    def to_dict(self) -> dict[str, Any]:
        d = self.device
        return {
            "kind": self.kind,
            "severity": self.severity,
            "subject": self.subject,
            "src": self.src,
            "device_id": d.device_id if d else None,
            "tenant": d.tenant if d else None,
            "zone": d.zone if d else None,
            "device_kind": d.kind if d else None,
            "first": self.first,
            "last": self.last,
            "count": self.count,
            "evidence": self.evidence,
        }


# Called on every hit: the alert, and whether the hit opened it (False: it extended it).
AlertListener = Callable[[TrafficAlert, bool], None]


class AlertLog:
    """Alerts in the order they opened; a hit within `window_s` of an alert's last extends it.

    Offline, `alerts` keeps every alert for the report. Live (`keep=False`), alerts are only
    handed to `listener` as they open or grow, and `prune` forgets the quiet ones: memory stays
    bounded however many subjects an attacker makes up.
    """

    def __init__(
        self, config: TrafficConfig, listener: AlertListener | None = None, *, keep: bool = True
    ) -> None:
        self._cfg = config
        self._listener = listener
        self._keep = keep
        self.alerts: list[TrafficAlert] = []
        self._open: dict[tuple[str, str], TrafficAlert] = {}

    def is_open(self, kind: AlertKind, subject: str, ts: float) -> bool:
        alert = self._open.get((kind, subject))
        return alert is not None and ts - alert.last <= self._cfg.window_s

    def hit(
        self,
        kind: AlertKind,
        subject: str,
        src: str,
        device: DeviceRef | None,
        first: float,
        last: float,
        count: int,
        evidence: dict[str, EvidenceValue],
    ) -> TrafficAlert:
        """Open an alert, or extend the open one: `count` adds up, evidence is updated."""
        alert = self._open.get((kind, subject))
        if alert is not None and first - alert.last <= self._cfg.window_s:
            alert.last = max(alert.last, last)
            alert.count += count
            alert.src, alert.device = src, device or alert.device
            alert.evidence.update(evidence)
            if self._listener is not None:
                self._listener(alert, False)
            return alert
        alert = TrafficAlert(
            kind, self._cfg.severities[kind], subject, src, device, first, last, count, evidence
        )
        self._open[(kind, subject)] = alert
        if self._keep:
            self.alerts.append(alert)
        if self._listener is not None:
            self._listener(alert, True)
        return alert

    def prune(self, now: float) -> None:
        """Forget open alerts quiet for more than a window: a later hit opens a new one."""
        horizon = now - self._cfg.window_s
        for key in [k for k, a in self._open.items() if a.last < horizon]:
            del self._open[key]

    @property
    def open_alerts(self) -> int:
        return len(self._open)


class SlidingCount:
    """Event times per key within the last `span` seconds."""

    def __init__(self, span: float) -> None:
        self.span = span
        self._times: dict[str, deque[float]] = {}

    def add(self, key: str, ts: float) -> deque[float]:
        q = self._times.get(key)
        if q is None:
            q = self._times[key] = deque()
        q.append(ts)
        horizon = ts - self.span
        while q[0] < horizon:
            q.popleft()
        return q

    def prune(self, now: float) -> None:
        """Forget keys idle for a whole span (attackers make keys up: memory stays bounded)."""
        horizon = now - self.span
        for key in [k for k, q in self._times.items() if q[-1] < horizon]:
            del self._times[key]


class SlidingDistinct:
    """Distinct values per key seen within the last `span` seconds."""

    def __init__(self, span: float) -> None:
        self.span = span
        self._seen: dict[str, dict[str, float]] = {}

    def add(self, key: str, value: str, ts: float) -> dict[str, float]:
        values = self._seen.setdefault(key, {})
        values.pop(value, None)
        values[value] = ts  # insertion order is recency order: the stalest come first
        horizon = ts - self.span
        while (oldest := next(iter(values.items())))[1] < horizon:
            del values[oldest[0]]
        return values

    def prune(self, now: float) -> None:
        horizon = now - self.span
        for key in [k for k, v in self._seen.items() if next(reversed(v.values())) < horizon]:
            del self._seen[key]
