from __future__ import annotations

import dataclasses
import itertools
import json
import random
from collections.abc import Callable, Mapping, Sequence

import pytest

from detectors import registry
from detectors.base import Detector
from detectors.columns import Columns, Reports
from detectors.identity import Identity
from detectors.model import DeviceRef, Record, Transition
from detectors.slots import DeviceTable

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


# --- The columnar path (update_columns) against the per-record code -------------------------

LIGHTS = [DeviceRef("villeurbanne", "tonkin", "lighting", f"light-{i}") for i in range(4)]
OTHERS = [DeviceRef("lyon", "gerland", "video", f"cam-g{i}") for i in range(3)]
CUT_PARAMS = {
    "learn_reports": 3,
    "clear_after": 4,
    "adopt_after_s": 3600,
    "campaign_window_s": 1800,
    "hold_s": 1200,
}


class PerRecordIdentity(Identity):
    """The oracle: no report is ever taken as plain, every row runs the per-record code."""

    def _is_plain(self, record: Record) -> bool:
        return False


def identity_stream(seed: int) -> list[Record]:
    """Two kinds interleaved, shared and fresh info objects, a roll-out, lone changes, a
    second publisher, a lasting new address, records without info, late records, a device
    first seen late and a clock jump that closes campaign windows mid-batch."""
    rng = random.Random(seed)
    devices = [*CAMS, *OTHERS, *LIGHTS]
    shared = {d: base_info(d) for d in devices}
    moved = {**base_info(OTHERS[2]), "src_ip": "10.7.7.7"}
    records: list[Record] = []
    for m in range(300):
        for j, d in enumerate(devices):
            if d == OTHERS[2] and m < 120:
                continue  # first seen late
            t = T0 + 60 * m + j + rng.random()
            info: Mapping[str, str] = shared[d]
            if d in CAMS[:4] and m >= 100 + 3 * CAMS.index(d):
                info = {**base_info(d), "firmware": "6.0"}  # the roll-out (fresh objects)
            if d == CAMS[5] and m >= 140:
                info = {**base_info(d), "firmware": "5.7.3-p1"}  # alone
            if d == OTHERS[0] and 180 <= m < 186:
                info = {**base_info(d), "firmware": "6.0-x"}  # alone, then back
            if d == OTHERS[2] and m > 120:  # another address while it is learned: it stays
                info = moved
            if d == LIGHTS[1] and m >= 200:
                info = {**base_info(d), "src_ip": "10.9.9.9"}  # adopted later
            if d in LIGHTS[2:] and rng.random() < 0.5:
                info = dict(info)  # an equal mapping, another object
            if rng.random() < 0.02:
                info = {}
            late = 200.0 if rng.random() < 0.03 else 0.0
            records.append(Record(d, t - late, {"x": 1.0}, m, info))
            if d == CAMS[1] and 60 <= m < 75:  # a second publisher
                forged = {**base_info(d), "client_id": "cam-1-x", "src_ip": "10.250.66.6"}
                records.append(Record(d, t + 0.5, {"x": 1.0}, m, forged))
        if m == 250:  # one device's clock far ahead: pushes the stream time past windows
            records.append(Record(LIGHTS[0], T0 + 60 * m + 2500, {"x": 1.0}, m, shared[LIGHTS[0]]))
    return records


def cuts(n: int, how: int | str, seed: int = 0) -> list[slice]:
    """The stream's rows cut into batches of `how` rows, or at random places ("random")."""
    if how == "random":
        rng = random.Random(seed)
        bounds = sorted({0, n, *(rng.randrange(n) for _ in range(n // 40))})
    else:
        assert isinstance(how, int)
        bounds = [*range(0, n, how), n]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def feed(
    det: Detector,
    records: Sequence[Record],
    how: int | str,
    seed: int = 0,
    table: DeviceTable | None = None,
) -> list[Transition]:
    """`records` in batches, through `update_columns` with the table shared by the batches;
    in random cuts, every other batch comes as the simulator hands it over: records made on
    demand from the columns."""
    table = DeviceTable() if table is None else table
    out: list[Transition] = []
    for i, part in enumerate(cuts(len(records), how, seed)):
        reports = Reports.of_records(records[part])
        if how == "random" and i % 2:
            reports = dataclasses.replace(reports, given=None)
        out += det.update_columns(Columns.of_reports(reports, table))
    return out


CUTS: list[tuple[int | str, int]] = [(1, 0), (7, 0), (500, 0), (1 << 30, 0)] + [
    ("random", s) for s in range(3)
]


def test_the_columnar_path_gives_the_per_record_transitions_in_any_cut() -> None:
    for seed in (1, 2):
        records = identity_stream(seed)
        params = registry.parse_params("identity", CUT_PARAMS)
        expected = PerRecordIdentity(params).update(records)
        assert {(t.device, t.firing) for t in expected} >= {
            (CAMS[1], True),
            (CAMS[1], False),
            (CAMS[5], True),
            (OTHERS[0], True),
            (LIGHTS[1], True),
            (OTHERS[2], True),
        }
        assert not [t for t in expected if "-> 6.0," in t.summary]  # the roll-out is quiet
        for how, cut_seed in CUTS:
            det = make(**CUT_PARAMS)
            assert repr(feed(det, records, how, cut_seed)) == repr(expected), (seed, how)
            oracle = PerRecordIdentity(params)
            oracle.update(records)
            assert json.dumps(det.state_dict()) == json.dumps(oracle.state_dict())


def forgets_and_resumes_as_the_oracle(
    make_detector: Callable[[], Detector],
    oracle: Detector,
    records: Sequence[Record],
    gone: set[str],
    cuts: Sequence[tuple[int | str, int]],
) -> list[Transition]:
    """Half the stream, `forget(gone)` (the engine then frees the slots), a checkpoint, the
    rest: in every cut, the oracle's transitions; a detector loaded from the checkpoint carries
    on with them. Returns the oracle's transitions."""
    half = len(records) // 2
    expected = oracle.update(records[:half])
    oracle.forget(gone)
    expected += oracle.update(records[half:])
    for how, cut_seed in cuts:
        det, table = make_detector(), DeviceTable()
        out = feed(det, records[:half], how, cut_seed, table)
        det.forget(gone)
        table.release(gone)  # as the engine does: the freed slots are given to others
        saved = json.loads(json.dumps(det.state_dict()))
        out += feed(det, records[half:], how, cut_seed, table)
        assert repr(out) == repr(expected), how
        again = make_detector()
        again.load_state(saved)
        resumed = feed(again, records[half:], how, cut_seed + 1)
        assert repr(resumed) == repr(expected[len(out) - len(resumed) :]), how
    return expected


def test_the_columnar_path_forgets_and_continues_from_a_checkpoint() -> None:
    oracle = PerRecordIdentity(registry.parse_params("identity", CUT_PARAMS))
    gone = {CAMS[5].device_id, LIGHTS[1].device_id}
    forgets_and_resumes_as_the_oracle(
        lambda: make(**CUT_PARAMS), oracle, identity_stream(3), gone, CUTS[1:]
    )


def test_update_and_update_columns_refuse_a_second_table() -> None:
    det = make()
    det.load_state(det.state_dict())  # binds no table: the engine's is taken next
    det.update_columns(Columns.of([Record(CAMS[1], T0, {}, 0, base_info(CAMS[1]))], DeviceTable()))
    det = make()
    det.update([Record(CAMS[0], T0, {"x": 1.0}, 0, base_info(CAMS[0]))])
    with pytest.raises(ValueError, match="another device table"):
        det.update_columns(Columns.of([Record(CAMS[0], T0 + 60, {}, 1)], DeviceTable()))
