"""The alert lifecycle: incidents, storm protection, suppressions, inhibition, observe-only."""

from __future__ import annotations

import random

import pytest

from detectors.model import DeviceRef, Transition
from sentinel.alerting.alerts import Alert, AlertBook, AlertPolicy, AlertSource, Rollup
from sentinel.alerting.lines import alert_line, incident_line
from sentinel.alerting.suppressions import SuppressionError, new_suppression
from sentinel.metrics import Metrics

SILENT = AlertSource("camera-silent", "CameraSilent", "cadence", "warning", group="outage")
ZONE_DARK = AlertSource("zone-dark", "ZoneDark", "fleet", "critical")
EXFIL = AlertSource("camera-upload-surge", "CameraUploadSurge", "threshold", "critical")
T0 = 1_790_000_000.0


def cam(i: int, zone: str = "gerland", tenant: str = "lyon") -> DeviceRef:
    return DeviceRef(tenant, zone, "video", f"{tenant}-cam-{i:05d}")


def fire(device: DeviceRef, ts: float, firing: bool = True) -> Transition:
    return Transition(device, firing, ts, "x", {"value": 1.0})


def notified_fingerprints(book: AlertBook, changed: list[Alert]) -> list[str]:
    return [n.fingerprint for n in book.notices(changed)]


def test_power_cut_is_one_incident_with_a_bounded_number_of_notifications() -> None:
    metrics = Metrics()
    book = AlertBook(metrics, AlertPolicy(max_notified_per_incident=10))
    changed = book.apply(SILENT, [fire(cam(i), T0 + i) for i in range(300)])
    assert len(changed) == 300
    assert {a.incident for a in changed} == {changed[0].incident}
    notices = book.notices(changed)
    alone = [n for n in notices if isinstance(n, Alert)]
    rollups = [n for n in notices if isinstance(n, Rollup)]
    assert (len(alone), len(rollups)) == (10, 1)
    assert rollups[0].incident.rolled_up == 290
    assert rollups[0].labels()["alertname"] == "SentinelIncidentRollup"
    assert "290 more" in rollups[0].summary
    (opened,) = book.tick(T0 + 300)
    assert (opened[1], opened[0].alerts, len(opened[0].devices)) == ("open", 300, 300)
    assert metrics.registry.get_sample_value("sentinel_incidents_open") == 1.0
    # Unchanged roll-up: not re-sent with the next unrelated change.
    assert notified_fingerprints(book, []) == []


def test_incident_closes_after_the_quiet_period_and_ends_its_rollup() -> None:
    book = AlertBook(Metrics(), AlertPolicy(incident_quiet_s=600, max_notified_per_incident=2))
    book.apply(SILENT, [fire(cam(i), T0) for i in range(5)])
    book.notices([])
    book.tick(T0)
    cleared = book.apply(SILENT, [fire(cam(i), T0 + 60, firing=False) for i in range(5)])
    assert [a.state for a in cleared] == ["resolved"] * 5
    assert book.tick(T0 + 60 + 599) == []  # still within the quiet period
    ((incident, state),) = book.tick(T0 + 60 + 600)
    assert (state, incident.open, incident.firing) == ("closed", False, 0)
    (rollup,) = book.notices([])
    assert isinstance(rollup, Rollup)
    assert not rollup.firing
    assert "state=closed" in incident_line(incident, state)
    # A new alert after the close opens a new incident.
    (again,) = book.apply(SILENT, [fire(cam(1), T0 + 3600)])
    assert again.incident != incident.id


@pytest.mark.parametrize("fleet_min_zones", [0, 3])
def test_alert_storm_gives_bounded_incidents_and_notifications(fleet_min_zones: int) -> None:
    rng = random.Random(7)
    policy = AlertPolicy(
        max_notified_per_incident=5, max_open_incidents=50, fleet_min_zones=fleet_min_zones
    )
    book = AlertBook(Metrics(), policy)
    notices = 0
    incidents: set[str] = set()
    # 100,000 alerts from devices spread over 2,000 zones of 20 tenants.
    for start in range(0, 100_000, 5_000):
        batch = [
            fire(cam(i, zone=f"z{rng.randrange(2000)}", tenant=f"t{rng.randrange(20)}"), T0 + i)
            for i in range(start, start + 5_000)
        ]
        changed = book.apply(EXFIL, batch)
        incidents |= {a.incident for a in changed}
        notices += len(book.notices(changed))
    # 50 open incidents + 1 overflow incident, each notified at most 5 alerts + 1 roll-up.
    # Fleet incidents take open slots too, and fold their zones' alerts into one notice.
    fleets = sum(1 for (_, zone, _) in book.incidents.open if zone == "_fleet")
    assert (fleets > 0) == (fleet_min_zones > 0)
    assert len(incidents) == 51 - fleets
    assert notices <= 51 * 6
    assert len(book.active) == 100_000  # every alert is still kept and stored


def campaign(
    book: AlertBook, zones: list[str], tenant: str = "lyon", per_zone: int = 4
) -> list[Alert]:
    """Each zone in turn gets `per_zone` alerting cameras, a minute apart."""
    changed: list[Alert] = []
    for z, zone in enumerate(zones):
        devices = [cam(100 * z + i, zone=zone, tenant=tenant) for i in range(per_zone)]
        changed += book.apply(EXFIL, [fire(d, T0 + 60 * z) for d in devices])
    return changed


def test_a_campaign_across_zones_becomes_one_fleet_incident() -> None:
    book = AlertBook(Metrics(), AlertPolicy(max_notified_per_incident=10, fleet_min_zones=3))
    changed = campaign(book, ["gerland", "confluence", "part-dieu", "vaise", "croix-rousse"])
    notices = book.notices(changed)
    alone = [n for n in notices if isinstance(n, Alert)]
    (fleet_notice,) = [n for n in notices if isinstance(n, Rollup)]
    # The first two zones are notified device by device; from the third, one fleet notice.
    assert [a.device.zone for a in alone] == ["gerland"] * 4 + ["confluence"] * 4
    labels = fleet_notice.labels()
    assert (labels["alertname"], labels["zone"], labels["tenant"]) == (
        "SentinelFleetIncident",
        "_fleet",
        "lyon",
    )
    fleet = fleet_notice.incident
    assert (fleet.alerts, len(fleet.devices), len(fleet.zones), fleet.rolled_up) == (20, 20, 5, 12)
    assert "5 zones of lyon" in fleet_notice.summary
    zone_incidents = [book.incidents.get(i) for i in sorted({a.incident for a in changed})]
    assert len(zone_incidents) == 5
    assert all(inc is not None and inc.fleet == fleet.id for inc in zone_incidents)
    written = {
        inc.id: line for inc, state in book.tick(T0 + 300) for line in [incident_line(inc, state)]
    }
    assert "zone=_fleet" in written[fleet.id]
    assert "zones=5i" in written[fleet.id]


def test_fleet_incident_needs_enough_zones_of_one_tenant() -> None:
    book = AlertBook(Metrics(), AlertPolicy(fleet_min_zones=3))
    changed = campaign(book, ["gerland", "confluence"])
    changed += campaign(book, ["centre", "gratte-ciel"], tenant="villeurbanne")
    assert all(a.notified for a in changed)
    assert not any(zone == "_fleet" for (_, zone, _) in book.incidents.open)


def test_fleet_incident_closes_with_its_last_zone() -> None:
    book = AlertBook(Metrics(), AlertPolicy(incident_quiet_s=600, fleet_min_zones=2))
    devices = [cam(1, zone="gerland"), cam(2, zone="vaise")]
    book.apply(EXFIL, [fire(d, T0) for d in devices])
    book.notices([])
    book.tick(T0)
    book.apply(EXFIL, [fire(devices[0], T0 + 10, firing=False)])
    # gerland closes on its own; vaise still fires, so the fleet stays open.
    assert [(inc.zone, state) for inc, state in book.tick(T0 + 10 + 600)] == [("gerland", "closed")]
    book.apply(EXFIL, [fire(devices[1], T0 + 900, firing=False)])
    closed = {inc.zone: state for inc, state in book.tick(T0 + 900 + 600)}
    assert closed == {"vaise": "closed", "_fleet": "closed"}
    (ended,) = book.notices([])
    assert isinstance(ended, Rollup)
    assert ended.fleet
    assert not ended.firing
    # The next alert of the group starts from scratch: one zone is not a fleet.
    (again,) = book.apply(EXFIL, [fire(devices[0], T0 + 9000)])
    assert again.notified


def test_suppression_mutes_in_its_window_and_is_stored_as_suppressed() -> None:
    metrics = Metrics()
    book = AlertBook(metrics)
    window = new_suppression(
        matchers={"zone": "gerland", "detector": "camera-*"},
        starts_at=T0,
        ends_at=T0 + 3600,
        author="ops@lyon",
        reason="camera firmware campaign",
        kind="maintenance",
        now=T0,
        max_days=90,
    )
    book.suppressions.add(window)
    muted, other_zone = book.apply(EXFIL, [fire(cam(1), T0 + 10), fire(cam(2, "vaise"), T0 + 10)])
    assert (muted.state, muted.suppressed_by, muted.incident) == ("suppressed", window.id, "")
    assert other_zone.state == "firing"
    assert notified_fingerprints(book, [muted, other_zone]) == [other_zone.fingerprint]
    assert "state=suppressed" in alert_line(muted)
    labels = {"detector": "camera-upload-surge"}
    assert metrics.registry.get_sample_value("sentinel_alerts_suppressed_total", labels) == 1.0
    # After the window, the same device alerts again.
    book.apply(EXFIL, [fire(cam(1), T0 + 20, firing=False)])
    (later,) = book.apply(EXFIL, [fire(cam(1), T0 + 3600)])
    assert later.state == "firing"


@pytest.mark.parametrize(
    ("matchers", "ends", "problem"),
    [
        ({}, T0 + 60, "at least one label"),
        ({"topic": "x"}, T0 + 60, "unknown label"),
        ({"device_id": "a b"}, T0 + 60, "not a label value"),
        ({"zone": "gerland"}, T0, "after starts_at"),
        ({"zone": "gerland"}, T0 + 91 * 86400, "at most 90 days"),
    ],
)
def test_suppression_refuses_what_would_mute_too_much_or_nothing(
    matchers: dict[str, str], ends: float, problem: str
) -> None:
    with pytest.raises(SuppressionError, match=problem):
        new_suppression(
            matchers=matchers,
            starts_at=T0,
            ends_at=ends,
            author="a",
            reason="r",
            kind="suppression",
            now=T0,
            max_days=90,
        )


def test_zone_outage_inhibits_device_silence_in_its_zone_only() -> None:
    book = AlertBook(Metrics(), AlertPolicy(inhibit=(("zone-dark", ("camera-silent",)),)))
    zone = DeviceRef("lyon", "gerland", "video", "zone")
    book.apply(ZONE_DARK, [fire(zone, T0)])
    inside, outside = book.apply(SILENT, [fire(cam(1), T0 + 5), fire(cam(2, "vaise"), T0 + 5)])
    assert (inside.state, inside.suppressed_by) == ("suppressed", "inhibited:zone-dark")
    assert outside.state == "firing"
    book.apply(ZONE_DARK, [fire(zone, T0 + 50, firing=False)])
    (after,) = book.apply(SILENT, [fire(cam(3), T0 + 60)])
    assert after.state == "firing"


def test_observe_only_detector_records_but_never_notifies() -> None:
    metrics = Metrics()
    book = AlertBook(metrics)
    trial = AlertSource("upload-v2", "UploadV2", "threshold", "critical", mode="observe")
    (seen,) = book.apply(trial, [fire(cam(1), T0)])
    assert seen.observed
    assert book.active == {}
    assert book.notices([seen]) == []
    assert alert_line(seen).startswith("observed,")
    (ended,) = book.apply(trial, [fire(cam(1), T0 + 9, firing=False)])
    assert ended is seen
    assert alert_line(ended).startswith("observed,")
    assert metrics.registry.get_sample_value("sentinel_observed_total", {"detector": "upload-v2"})


def test_incident_severity_is_the_highest_of_its_alerts() -> None:
    book = AlertBook(Metrics())
    warn = AlertSource("a", "A", "threshold", "warning", group="g")
    crit = AlertSource("b", "B", "threshold", "critical", group="g")
    (first,) = book.apply(warn, [fire(cam(1), T0)])
    (second,) = book.apply(crit, [fire(cam(2), T0 + 1)])
    assert first.incident == second.incident
    incident = book.incidents.get(first.incident)
    assert incident is not None
    assert incident.severity == "critical"
    assert incident.detectors == {"a", "b"}
