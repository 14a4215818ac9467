"""Incidents: alerts of one cause in one zone, grouped, so one event is one notification.

An alert joins the open incident of its (tenant, zone, group) key, where `group` is the
detector's configured group (default: its name); otherwise it opens one. An incident with no
firing alert for `quiet_s` of device time closes. Storm protection: an incident's first
`max_notified` alerts are notified one by one, the rest only through one roll-up notice that
counts them; beyond `max_open` open incidents, new keys fold into one overflow incident per
group. So however many alerts an attack raises, notifications stay below
(max_open + groups) × (max_notified + 1).

Fleet incidents: when incidents of one group are open in `fleet_min_zones` zones of a tenant at
once (a botnet recruiting cameras across the city, silences everywhere), they are linked to one
fleet incident (zone `_fleet`). From then on their new alerts are notified only through the fleet
incident's notice, which counts every alert and device of its zones: one page for a city-wide
campaign instead of one per zone.

Incident ids hash the key and the opening time: a replay of the same stream gives the same ids.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from detectors.model import EvidenceValue

OVERFLOW = "_overflow"
FLEET = "_fleet"
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
    fleet: str = ""  # the fleet incident this zone incident belongs to
    zones: set[str] = field(default_factory=set)  # a fleet incident's zones

    @property
    def open(self) -> bool:
        return self.closed_at is None

    def describe(self) -> str:
        if self.zone == FLEET:
            where = f"{len(self.zones)} zones of {self.tenant}"
        elif self.zone == OVERFLOW:
            where = "all zones"
        else:
            where = f"{self.tenant}/{self.zone}"
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
            "fleet": self.fleet,
            "zones": sorted(self.zones)[:_SAMPLE_DEVICES],
        }


def incident_id(tenant: str, zone: str, group: str, opened_at: float) -> str:
    key = "\x1f".join((tenant, zone, group, f"{opened_at:.3f}"))
    return "i-" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a new alert went: its incident, and whether it is notified on its own; if not,
    `rollup` is the incident whose notice counts it (its own, or its fleet incident)."""

    incident: Incident
    notify_alone: bool
    rollup: Incident | None = None


class IncidentBook:
    def __init__(
        self,
        quiet_s: float,
        max_notified: int,
        max_open: int,
        history: int = 1000,
        fleet_min_zones: int = 0,
    ) -> None:
        self.quiet_s = quiet_s
        self.max_notified = max_notified
        self.max_open = max_open
        self.fleet_min_zones = fleet_min_zones  # 0: no fleet incidents
        self.open: dict[tuple[str, str, str], Incident] = {}
        self.by_id: OrderedDict[str, Incident] = OrderedDict()  # open and recently closed
        self._history = history
        self.changed: dict[str, tuple[Incident, IncidentState]] = {}
        # open zone incidents per (tenant, group): what a fleet incident is counted from
        self._zones_open: Counter[tuple[str, str]] = Counter()

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
        if incident is None:
            incident = self._open(key, severity, ts)
            if key[1] != OVERFLOW:
                self._zones_open[(tenant, group)] += 1
        fleet = self._fleet_of(incident, ts)  # linked before this alert is counted
        self._count(incident, severity, detector, device_id, ts)
        if fleet is not None:
            self._count(fleet, severity, detector, device_id, ts)
            fleet.rolled_up += 1
            incident.rolled_up += 1
            return Placement(incident, False, fleet)
        alone = incident.notified < self.max_notified
        if alone:
            incident.notified += 1
            return Placement(incident, True)
        incident.rolled_up += 1
        if incident.rollup_since is None:
            incident.rollup_since = ts
        return Placement(incident, False, incident)

    def _open(self, key: tuple[str, str, str], severity: str, ts: float) -> Incident:
        incident = Incident(incident_id(*key, ts), key[0], key[1], key[2], severity, ts, ts)
        self.open[key] = incident
        self._remember(incident)
        self.changed[incident.id] = (incident, "open")
        return incident

    def _count(
        self, incident: Incident, severity: str, detector: str, device_id: str, ts: float
    ) -> None:
        if _SEVERITY_RANK.get(severity, 0) > _SEVERITY_RANK.get(incident.severity, 0):
            incident.severity = severity
        incident.alerts += 1
        incident.firing += 1
        incident.devices.add(device_id)
        incident.detectors.add(detector)
        incident.last_change = max(incident.last_change, ts)
        incident.summary = incident.describe()
        self._note_growth(incident)

    def _note_growth(self, incident: Incident) -> None:
        # Growth is recorded at 1, 2, 4, 8... alerts: a storm writes log2(n) points, not n.
        pending = self.changed.get(incident.id)
        if pending is not None and pending[1] == "open":
            return  # not yet written: the "open" point will carry the counts
        if incident.alerts & (incident.alerts - 1) == 0:
            self.changed[incident.id] = (incident, "updated")

    def _fleet_of(self, incident: Incident, ts: float) -> Incident | None:
        """The fleet incident a zone incident belongs to; opens it when enough zones of the
        tenant have an open incident of the same group."""
        if incident.fleet:
            return self.by_id.get(incident.fleet)
        if self.fleet_min_zones <= 0 or incident.zone == OVERFLOW:
            return None
        tenant, group = incident.tenant, incident.group
        fleet = self.open.get((tenant, FLEET, group))
        if fleet is None:
            if self._zones_open[(tenant, group)] < self.fleet_min_zones:
                return None
            fleet = self._open((tenant, FLEET, group), incident.severity, ts)
            members = [
                inc
                for (t, z, g), inc in self.open.items()
                if t == tenant and g == group and z not in (FLEET, OVERFLOW)
            ]
        else:
            members = [incident]
        for member in members:
            self._link(fleet, member)
        return fleet

    def _link(self, fleet: Incident, member: Incident) -> None:
        member.fleet = fleet.id
        fleet.zones.add(member.zone)
        fleet.alerts += member.alerts
        fleet.firing += member.firing
        fleet.devices |= member.devices
        fleet.detectors |= member.detectors
        if _SEVERITY_RANK.get(member.severity, 0) > _SEVERITY_RANK.get(fleet.severity, 0):
            fleet.severity = member.severity
        fleet.last_change = max(fleet.last_change, member.last_change)
        fleet.summary = fleet.describe()
        if member.id not in self.changed:
            self.changed[member.id] = (member, "updated")  # its point now names the fleet

    def resolve(self, incident_id: str, ts: float) -> None:
        incident = self.by_id.get(incident_id)
        if incident is None or not incident.open or incident.firing <= 0:
            return
        incident.firing -= 1
        incident.last_change = max(incident.last_change, ts)
        fleet = self.by_id.get(incident.fleet) if incident.fleet else None
        if fleet is not None and fleet.open and fleet.firing > 0:
            fleet.firing -= 1
            fleet.last_change = max(fleet.last_change, ts)

    def close_quiet(self, now: float) -> list[Incident]:
        """Close incidents without a firing alert for quiet_s; returns them. A fleet
        incident closes with its last zone incident."""
        closed = [
            inc
            for inc in self.open.values()
            if inc.zone != FLEET and inc.firing == 0 and now - inc.last_change >= self.quiet_s
        ]
        for inc in closed:
            self._close(inc, now)
            if inc.zone != OVERFLOW:
                self._zones_open[(inc.tenant, inc.group)] -= 1
                if self._zones_open[(inc.tenant, inc.group)] <= 0:
                    del self._zones_open[(inc.tenant, inc.group)]
        fleets = [
            inc
            for (tenant, zone, group), inc in self.open.items()
            if zone == FLEET and (tenant, group) not in self._zones_open
        ]
        for fleet in fleets:
            self._close(fleet, now)
        return closed + fleets

    def _close(self, incident: Incident, now: float) -> None:
        incident.closed_at = now
        incident.summary = incident.describe()
        del self.open[(incident.tenant, incident.zone, incident.group)]
        self.changed[incident.id] = (incident, "closed")

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
