"""Incidents: alerts of one cause in one zone, grouped, so one event is one notification.

An alert joins the open incident of its (tenant, zone, group) key, where `group` is the
detector's configured group (default: its name); otherwise it opens one. An incident with no
firing alert for `quiet_s` of device time closes. Storm protection: an incident's first
`max_notified` alerts are notified one by one, the rest only through one roll-up notice that
counts them; beyond `max_open` open incidents, new keys fold into one overflow incident per
group. So however many alerts an attack raises, notifications stay below
(max_open + groups) × (max_notified + 1).

Incident ids hash the key and the opening time: a replay of the same stream gives the same ids.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from detectors.model import EvidenceValue

OVERFLOW = "_overflow"
_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
_SAMPLE_DEVICES = 10

IncidentState = Literal["open", "updated", "closed"]


@dataclass(slots=True)
class Incident:
    id: str
    tenant: str
    zone: str
    group: str
    severity: str
    opened_at: float
    last_change: float
    alerts: int = 0  # alerts that joined, ever
    firing: int = 0  # of which still firing
    devices: set[str] = field(default_factory=set)
    detectors: set[str] = field(default_factory=set)  # configured names: a bounded set
    notified: int = 0  # alerts notified one by one
    rolled_up: int = 0  # alerts notified only through the roll-up
    rollup_since: float | None = None
    closed_at: float | None = None
    summary: str = ""

    @property
    def open(self) -> bool:
        return self.closed_at is None

    def describe(self) -> str:
        where = "all zones" if self.zone == OVERFLOW else f"{self.tenant}/{self.zone}"
        return (
            f"{self.group} in {where}: {self.alerts} alert(s) on {len(self.devices)} device(s)"
            f" since {self.opened_at:.0f}"
        )

    def to_dict(self) -> dict[str, EvidenceValue | list[str]]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "zone": self.zone,
            "group": self.group,
            "severity": self.severity,
            "state": "open" if self.open else "closed",
            "opened_at": self.opened_at,
            "last_change": self.last_change,
            "closed_at": self.closed_at,
            "alerts": self.alerts,
            "firing": self.firing,
            "devices": len(self.devices),
            "detectors": sorted(self.detectors),
            "sample_devices": sorted(self.devices)[:_SAMPLE_DEVICES],
            "notified": self.notified,
            "rolled_up": self.rolled_up,
            "summary": self.summary,
        }


def incident_id(tenant: str, zone: str, group: str, opened_at: float) -> str:
    key = "\x1f".join((tenant, zone, group, f"{opened_at:.3f}"))
    return "i-" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a new alert went: its incident, and whether it is notified on its own."""

    incident: Incident
    notify_alone: bool


class IncidentBook:
    def __init__(
        self, quiet_s: float, max_notified: int, max_open: int, history: int = 1000
    ) -> None:
        self.quiet_s = quiet_s
        self.max_notified = max_notified
        self.max_open = max_open
        self.open: dict[tuple[str, str, str], Incident] = {}
        self.by_id: OrderedDict[str, Incident] = OrderedDict()  # open and recently closed
        self._history = history
        self.changed: dict[str, tuple[Incident, IncidentState]] = {}

    def place(
        self,
        tenant: str,
        zone: str,
        group: str,
        detector: str,
        severity: str,
        device_id: str,
        ts: float,
    ) -> Placement:
        key = (tenant, zone, group)
        incident = self.open.get(key)
        if incident is None and len(self.open) >= self.max_open:
            key = (OVERFLOW, OVERFLOW, group)
            incident = self.open.get(key)
        state: IncidentState = "updated"
        if incident is None:
            incident = Incident(incident_id(*key, ts), key[0], key[1], group, severity, ts, ts)
            self.open[key] = incident
            self._remember(incident)
            state = "open"
        if _SEVERITY_RANK.get(severity, 0) > _SEVERITY_RANK.get(incident.severity, 0):
            incident.severity = severity
        incident.alerts += 1
        incident.firing += 1
        incident.devices.add(device_id)
        incident.detectors.add(detector)
        incident.last_change = max(incident.last_change, ts)
        incident.summary = incident.describe()
        alone = incident.notified < self.max_notified
        if alone:
            incident.notified += 1
        else:
            incident.rolled_up += 1
            if incident.rollup_since is None:
                incident.rollup_since = ts
        # Growth is recorded at 1, 2, 4, 8... alerts: a storm writes log2(n) points, not n.
        pending = self.changed.get(incident.id)
        if pending is not None and pending[1] == "open":
            pass  # not yet written: the "open" point will carry the counts
        elif state == "open" or incident.alerts & (incident.alerts - 1) == 0:
            self.changed[incident.id] = (incident, state)
        return Placement(incident, alone)

    def resolve(self, incident_id: str, ts: float) -> None:
        incident = self.by_id.get(incident_id)
        if incident is not None and incident.open and incident.firing > 0:
            incident.firing -= 1
            incident.last_change = max(incident.last_change, ts)

    def close_quiet(self, now: float) -> list[Incident]:
        """Close incidents without a firing alert for quiet_s; returns them."""
        closed = [
            inc
            for inc in self.open.values()
            if inc.firing == 0 and now - inc.last_change >= self.quiet_s
        ]
        for inc in closed:
            inc.closed_at = now
            inc.summary = inc.describe()
            del self.open[(inc.tenant, inc.zone, inc.group)]
            self.changed[inc.id] = (inc, "closed")
        return closed

    def take_changes(self) -> list[tuple[Incident, IncidentState]]:
        out = list(self.changed.values())
        self.changed = {}
        return out

    def get(self, incident_id: str) -> Incident | None:
        return self.by_id.get(incident_id)

    def _remember(self, incident: Incident) -> None:
        self.by_id[incident.id] = incident
        while len(self.by_id) > self._history + len(self.open):
            oldest_id, oldest = next(iter(self.by_id.items()))
            if oldest.open:  # never forget an open one; the bound above counts them
                self.by_id.move_to_end(oldest_id)
                continue
            del self.by_id[oldest_id]
