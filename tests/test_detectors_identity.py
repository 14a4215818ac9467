from __future__ import annotations

from collections.abc import Callable

from detectors import registry
from detectors.identity import Identity
from detectors.model import DeviceRef, Record, Transition

T0 = 1_700_000_000.0
CAMS = [DeviceRef("villeurbanne", "gratte-ciel", "video", f"cam-{i}") for i in range(6)]
FAR = DeviceRef("lyon", "gerland", "video", "cam-far")

Info = dict[str, str]


def make(**params: object) -> Identity:
    detector = registry.create("identity", registry.parse_params("identity", params))
    assert isinstance(detector, Identity)
    return detector


def base_info(d: DeviceRef) -> Info:
    return {"client_id": d.device_id, "src_ip": "10.1.0.1", "firmware": "5.7.3"}


def run(
    devices: list[DeviceRef],
    minutes: int,
    info: Callable[[DeviceRef, float], Info] = lambda d, t: base_info(d),
    det: Identity | None = None,
) -> tuple[Identity, list[Transition]]:
    """Each device reports every minute; `info` gives its info object at time t."""
    det = det or make()
    records = [
        Record(d, T0 + 60 * m + j, {"x": 1.0}, m, info(d, T0 + 60 * m + j))
        for m in range(minutes)
        for j, d in enumerate(devices)
    ]
    return det, det.update(records)


def test_a_second_client_id_raises_at_once_and_clears_when_it_stops() -> None:
    forged_from, forged_to = T0 + 600, T0 + 1200
    det = make()
    records: list[Record] = []
    for m in range(40):
        t = T0 + 60 * m
        records.append(Record(CAMS[0], t, {"x": 1.0}, m, base_info(CAMS[0])))
        if forged_from <= t < forged_to:
            forged = {**base_info(CAMS[0]), "client_id": "cam-0-x", "src_ip": "10.250.66.6"}
            records.append(Record(CAMS[0], t + 0.4, {"x": 1.0}, m, forged))
    out = det.update(records)
    assert [t.firing for t in out] == [True, False]
    assert out[0].ts == forged_from + 0.4
    assert out[0].evidence == {
        "field": "client_id",
        "old": "cam-0",
        "new": "cam-0-x",
        "learned_from_reports": 11,
    }
    assert out[1].ts == forged_to + 60 * 9  # clear_after = 10 genuine reports in a row


def test_no_alert_while_learning_and_no_info_is_ignored() -> None:
    det = make(learn_reports=3)
    r = [
        Record(CAMS[0], T0, {"x": 1.0}, 0, {"client_id": "a"}),
        Record(CAMS[0], T0 + 60, {"x": 1.0}, 1, {"client_id": "b"}),
        Record(CAMS[0], T0 + 120, {"x": 1.0}, 2),
    ]
    assert det.update(r) == []


def test_a_lasting_new_address_is_adopted() -> None:
    def moved(d: DeviceRef, t: float) -> Info:
        return {**base_info(d), "src_ip": "10.9.9.9" if t >= T0 + 3600 else "10.1.0.1"}

    det, out = run([CAMS[0]], 60 * 9, moved, make(adopt_after_s=4 * 3600))
    assert [t.firing for t in out] == [True, False]
    assert "adopted" in out[1].summary
    assert out[1].ts - out[0].ts >= 4 * 3600
    assert det.devices_[CAMS[0]].learned["src_ip"] == "10.9.9.9"


def test_a_rollout_campaign_is_quiet_and_a_lone_change_raises_after_the_window() -> None:
    rollout_at = {d: T0 + 3600 + 240 * i for i, d in enumerate(CAMS[:4])}

    def info(d: DeviceRef, t: float) -> Info:
        fw = "5.8.0" if t >= rollout_at.get(d, float("inf")) else "5.7.3"
        if d == CAMS[5] and t >= T0 + 2 * 3600:
            fw = "5.7.3-p1"
        return {**base_info(d), "firmware": fw}

    det, out = run(CAMS, 5 * 60, info, make(campaign_window_s=1800, hold_s=3600))
    raised = [t for t in out if t.firing]
    assert [t.device for t in raised] == [CAMS[5]]
    t = raised[0]
    assert T0 + 2 * 3600 + 1800 <= t.ts <= T0 + 2 * 3600 + 1900
    assert (t.evidence["firmware_old"], t.evidence["firmware_new"]) == ("5.7.3", "5.7.3-p1")
    cleared = [x for x in out if not x.firing]
    assert [x.device for x in cleared] == [CAMS[5]]
    assert cleared[0].ts - t.ts >= 3600
    assert all(det.devices_[d].learned["firmware"] == "5.8.0" for d in CAMS[:4])


def test_two_devices_are_no_campaign_nor_are_devices_of_another_tenant() -> None:
    movers = {CAMS[0], CAMS[1], FAR}

    def info(d: DeviceRef, t: float) -> Info:
        fw = "6.0" if d in movers and t >= T0 + 3600 else "5.7.3"
        return {**base_info(d), "firmware": fw}

    _, out = run([*CAMS, FAR], 3 * 60, info, make(campaign_min_devices=3))
    assert {t.device for t in out if t.firing} == movers
    _, out = run([*CAMS, FAR], 3 * 60, info, make(campaign_min_devices=3, campaign_scope="fleet"))
    assert [t for t in out if t.firing] == []


def test_a_late_member_of_a_known_campaign_stays_quiet() -> None:
    def info(d: DeviceRef, t: float) -> Info:
        at = T0 + 3600 + (7200 if d == CAMS[3] else 0)
        return {**base_info(d), "firmware": "5.8.0" if t >= at else "5.7.3"}

    _, out = run(CAMS[:4], 4 * 60, info)
    assert out == []


def test_forget() -> None:
    det, _ = run(CAMS, 5)
    det.forget({CAMS[0].device_id})
    assert det.tracked_devices() == len(CAMS) - 1


def test_a_state_saved_with_other_fields_learns_the_newly_watched_ones() -> None:
    # Learned by a detector that watched `model`, not `src_ip` (as many fields as now): after
    # the upgrade, `src_ip` is learned from the next report, and a later change of it raises.
    cam = CAMS[0]
    full = {"src_ip": "10.1.0.1", "config_hash": "ab12", "model": "dome"}
    before = make(identity_fields=("client_id", "model"))
    run([cam], 5, lambda d, t: {**base_info(d), **full}, det=before)
    det = make()
    det.load_state(before.state_dict())
    start = T0 + 3600
    same = [
        Record(cam, start + 60 * m, {"x": 1.0}, m, {**base_info(cam), **full}) for m in range(3)
    ]
    assert det.update(same) == []
    moved = {**base_info(cam), **full, "src_ip": "10.9.9.9"}
    out = det.update([Record(cam, start + 600, {"x": 1.0}, 9, moved)])
    assert [(t.firing, t.evidence["field"], t.evidence["old"]) for t in out] == [
        (True, "src_ip", "10.1.0.1")
    ]
