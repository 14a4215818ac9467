"""Alerts as the SOC sees them, and the book that keeps them through their life.

A detector says "device X started / stopped firing"; the book turns that into an alert with a
stable fingerprint and decides what becomes of it:
- an observe-only detector's alert is recorded (measurement `observed`), never notified;
- an alert matched by a suppression, a maintenance window or an inhibition is `suppressed`:
  stored, never notified;
- any other alert is `firing`, joins an incident (sentinel.alerting.incidents) and is notified
  on its own or through its incident's roll-up (storm protection).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import orjson

from detectors.model import DeviceRef, EvidenceValue, Transition
from sentinel.alerting.incidents import FLEET, Incident, IncidentBook, IncidentState
from sentinel.alerting.suppressions import Suppressions
from sentinel.metrics import Metrics

AlertState = Literal["firing", "resolved", "suppressed"]
Mode = Literal["alert", "observe"]


@dataclass(frozen=True, slots=True)
class AlertSource:
    """What the book needs to know about the detector instance that raised a transition."""

    name: str  # the configured detector name, e.g. "camera-upload-surge"
    alertname: str  # e.g. "CameraUploadSurge"
    detector_type: str
    severity: str
    summary: str = ""
    mode: Mode = "alert"
    mitre: str = ""  # ATT&CK for ICS technique id, e.g. "T0831"
    group: str = ""  # incident grouping key; default: the name

    @property
    def incident_group(self) -> str:
        return self.group or self.name


class Notice(Protocol):
    """What a notifier (Alertmanager, MQTT) sends: an alert, or an incident's roll-up."""

    @property
    def fingerprint(self) -> str: ...
    @property
    def starts_at(self) -> float: ...
    @property
    def firing(self) -> bool: ...
    @property
    def summary(self) -> str: ...
    def labels(self) -> dict[str, str]: ...
    def evidence_json(self) -> str: ...


@dataclass(slots=True)
class Alert:
    source: AlertSource
    device: DeviceRef
    starts_at: float  # device time of the transition that raised it
    summary: str
    evidence: dict[str, EvidenceValue]
    ends_at: float | None = None  # device time of the transition that cleared it
    state: AlertState = "firing"
    incident: str = ""
    suppressed_by: str = ""  # suppression id, or "inhibited:<fingerprint>"
    notified: bool = False  # sent to the notifiers on its own (not only in a roll-up)
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        key = "\x1f".join((self.source.name, *self.device))
        self.fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]

    @property
    def firing(self) -> bool:
        return self.ends_at is None

    @property
    def observed(self) -> bool:
        return self.source.mode == "observe"

    def labels(self) -> dict[str, str]:
        d = self.device
        labels = {
            "alertname": self.source.alertname,
            "severity": self.source.severity,
            "tenant": d.tenant,
            "zone": d.zone,
            "kind": d.kind,
            "device_id": d.device_id,
            "detector": self.source.name,
        }
        if self.incident:
            labels["incident"] = self.incident
        return labels

    def evidence_json(self) -> str:
        return orjson.dumps(self.evidence, option=orjson.OPT_SORT_KEYS).decode()

    def to_dict(self) -> dict[str, object]:
        return {
            "fingerprint": self.fingerprint,
            "labels": self.labels(),
            "state": self.state,
            "summary": self.summary,
            "evidence": self.evidence,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "incident": self.incident,
            "suppressed_by": self.suppressed_by,
            "mitre": self.source.mitre,
            "observed": self.observed,
        }


@dataclass(slots=True)
class Rollup:
    """Stands for the alerts of an incident beyond the ones notified one by one; for a fleet
    incident, for the whole campaign across its zones."""

    incident: Incident
    starts_at: float
    firing: bool = True

    @property
    def fingerprint(self) -> str:
        return "r-" + self.incident.id

    @property
    def fleet(self) -> bool:
        return self.incident.zone == FLEET

    @property
    def summary(self) -> str:
        inc = self.incident
        if self.fleet:
            return f"fleet incident: {inc.summary}"
        return (
            f"{inc.rolled_up} more alert(s) of {inc.group} not notified one by one ({inc.summary})"
        )

    def labels(self) -> dict[str, str]:
        inc = self.incident
        return {
            "alertname": "SentinelFleetIncident" if self.fleet else "SentinelIncidentRollup",
            "severity": inc.severity,
            "tenant": inc.tenant,
            "zone": inc.zone,
            "detector": inc.group,
            "incident": inc.id,
        }

    def evidence_json(self) -> str:
        return orjson.dumps(self.incident.to_dict(), option=orjson.OPT_SORT_KEYS).decode()


def alertname_for(name: str) -> str:
    """`camera-upload-surge` → `CameraUploadSurge`."""
    return "".join(part[:1].upper() + part[1:] for part in name.replace("_", "-").split("-"))


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """The [alerting] settings the book applies (see sentinel.config.AlertingConfig)."""

    incident_quiet_s: float = 600.0
    max_notified_per_incident: int = 10
    max_open_incidents: int = 500
    fleet_min_zones: int = 3  # 0: no fleet incidents
    # detector name → the detectors it inhibits in its zone while it fires
    inhibit: tuple[tuple[str, tuple[str, ...]], ...] = ()
    max_suppressions: int = 1000


class AlertBook:
    """Active alerts by fingerprint, their incidents, suppressions, and recent history."""

    def __init__(
        self, metrics: Metrics, policy: AlertPolicy | None = None, history: int = 10_000
    ) -> None:
        self._metrics = metrics
        self.policy = policy or AlertPolicy()
        self.active: dict[str, Alert] = {}  # firing or suppressed, not resolved
        self.observing: dict[str, Alert] = {}  # observe-only detectors' active alerts
        self.recent: OrderedDict[str, Alert] = OrderedDict()  # by fingerprint, bounded
        self._history = history
        self.suppressions = Suppressions(self.policy.max_suppressions)
        self.incidents = self._new_incident_book()
        self._inhibitors: dict[str, tuple[str, ...]] = {}
        self._sources: set[str] = set()
        self._rollups_sent: dict[str, tuple[int, bool]] = {}  # incident id → (count, firing)
        self._firing_sources: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.rollups: dict[str, Rollup] = {}  # incident id → its roll-up notice
        self.set_policy(self.policy)

    def _new_incident_book(self) -> IncidentBook:
        p = self.policy
        return IncidentBook(
            p.incident_quiet_s,
            p.max_notified_per_incident,
            p.max_open_incidents,
            fleet_min_zones=p.fleet_min_zones,
        )

    def set_policy(self, policy: AlertPolicy) -> None:
        """Apply new settings (hot reload); open incidents and active alerts are kept."""
        self.policy = policy
        self.suppressions.capacity = policy.max_suppressions
        inc = self.incidents
        inc.quiet_s = policy.incident_quiet_s
        inc.max_notified = policy.max_notified_per_incident
        inc.max_open = policy.max_open_incidents
        inc.fleet_min_zones = policy.fleet_min_zones
        targets: defaultdict[str, list[str]] = defaultdict(list)
        for source, muted in policy.inhibit:
            for target in muted:
                targets[target].append(source)
        self._inhibitors = {t: tuple(s) for t, s in targets.items()}
        self._sources = {source for source, _ in policy.inhibit}

    @property
    def history(self) -> list[Alert]:
        """Recent alerts, oldest first (consoles and the demo)."""
        return list(self.recent.values())

    def find(self, fingerprint: str) -> Alert | None:
        return self.active.get(fingerprint) or self.recent.get(fingerprint)

    def apply(self, source: AlertSource, transitions: Sequence[Transition]) -> list[Alert]:
        """Record transitions; return the alerts that changed (raised, suppressed, resolved)."""
        changed: list[Alert] = []
        book = self.observing if source.mode == "observe" else self.active
        for t in transitions:
            probe = Alert(source, t.device, t.ts, t.summary, t.evidence)
            current = book.get(probe.fingerprint)
            if t.firing and current is None:
                if source.summary:
                    probe.summary = f"{source.summary}: {t.summary}"
                book[probe.fingerprint] = probe
                if source.mode == "alert":
                    self._raise(probe)
                else:
                    self._metrics.observed.labels(source.name).inc()
                self._remember(probe)
                changed.append(probe)
            elif not t.firing and current is not None:
                current.ends_at = max(t.ts, current.starts_at)
                current.evidence = {**current.evidence, "cleared_by": t.evidence.get("value")}
                del book[current.fingerprint]
                if source.mode == "alert":
                    self._resolve(current)
                changed.append(current)
        return changed

    def _raise(self, alert: Alert) -> None:
        s, d = alert.source, alert.device
        self._metrics.alerts.labels(s.name, s.severity).inc()
        muted_by = self._muted_by(alert)
        if muted_by:
            alert.state = "suppressed"
            alert.suppressed_by = muted_by
            self._metrics.alerts_suppressed.labels(s.name).inc()
            return
        self._metrics.alerts_active.labels(s.name, s.severity).inc()
        if s.name in self._sources:
            self._firing_sources[(s.name, d.tenant, d.zone)] += 1
        placed = self.incidents.place(
            d.tenant, d.zone, s.incident_group, s.name, s.severity, d.device_id, alert.starts_at
        )
        alert.incident = placed.incident.id
        alert.notified = placed.notify_alone
        if placed.rollup is not None:
            self._metrics.notifications_dropped.labels("rolled_up").inc()
            if placed.rollup.id not in self.rollups:
                self.rollups[placed.rollup.id] = Rollup(placed.rollup, alert.starts_at)

    def _resolve(self, alert: Alert) -> None:
        s, d = alert.source, alert.device
        if alert.state == "suppressed":
            alert.state = "resolved"
            return
        alert.state = "resolved"
        self._metrics.alerts_active.labels(s.name, s.severity).dec()
        key = (s.name, d.tenant, d.zone)
        if key in self._firing_sources:
            self._firing_sources[key] -= 1
            if self._firing_sources[key] <= 0:
                del self._firing_sources[key]
        self.incidents.resolve(alert.incident, alert.ends_at or alert.starts_at)

    def _muted_by(self, alert: Alert) -> str:
        labels = alert.labels()
        found = self.suppressions.match(labels, alert.starts_at)
        if found is not None:
            return found.id
        d = alert.device
        for source in self._inhibitors.get(alert.source.name, ()):
            if self._firing_sources.get((source, d.tenant, d.zone), 0) > 0:
                return f"inhibited:{source}"
        return ""

    def tick(self, now: float) -> list[tuple[Incident, IncidentState]]:
        """Close quiet incidents (device time `now`) and end their roll-ups; returns the
        incident changes since the last tick."""
        for incident in self.incidents.close_quiet(now):
            rollup = self.rollups.get(incident.id)
            if rollup is not None:
                rollup.firing = False
        self._metrics.incidents_open.set(len(self.incidents.open))
        changes = self.incidents.take_changes()
        for incident, state in changes:
            if state == "open":
                self._metrics.incidents.labels(incident.severity).inc()
        return changes

    def notices(self, changed: Iterable[Alert]) -> list[Notice]:
        """What the notifiers should send for these changes: alerts notified on their own,
        plus the roll-ups of incidents that grew or closed."""
        out: list[Notice] = [a for a in changed if a.notified]
        for incident_id, rollup in self.rollups.items():
            now = (rollup.incident.rolled_up, rollup.firing)
            if self._rollups_sent.get(incident_id) != now:
                self._rollups_sent[incident_id] = now
                out.append(rollup)
        for incident_id in [k for k, r in self.rollups.items() if not r.firing]:
            del self.rollups[incident_id]
            self._rollups_sent.pop(incident_id, None)
        return out

    def notified_active(self) -> list[Notice]:
        """Everything a notifier must keep re-sending while it lasts."""
        out: list[Notice] = [a for a in self.active.values() if a.notified]
        out += self.rollups.values()
        return out

    def _remember(self, alert: Alert) -> None:
        self.recent[alert.fingerprint] = alert
        self.recent.move_to_end(alert.fingerprint)
        while len(self.recent) > self._history:
            self.recent.popitem(last=False)
