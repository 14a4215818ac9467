"""peer_drift: a device against the median of its zone's peers (jump and slope)."""

from __future__ import annotations

import json
import statistics
from array import array

import numpy as np
import pytest

from detectors import registry
from detectors import state as state_codec
from detectors.base import Detector
from detectors.columns import Columns
from detectors.drift import _Peers
from detectors.model import DeviceRef, Record, Transition
from detectors.slots import DeviceTable

T0 = 1_700_000_000.0
CAMS = [DeviceRef("lyon", "gerland", "video", f"cam-{i}") for i in range(4)]


def make(**params: object) -> Detector:
    return registry.create("peer_drift", registry.parse_params("peer_drift", params))


def stream(
    hours: float, scale: dict[str, float], step: float = 30.0, seed: int = 3
) -> list[Record]:
    """Cameras with a shared day ramp, each at its own level; `scale` multiplies one device."""
    rng = np.random.default_rng(seed)
    out = []
    for n in range(int(hours * 3600 / step)):
        ts = T0 + n * step
        day = 1 + 0.45 * (np.sin(2 * np.pi * ts / 86_400) > 0)  # the fleet's shared rhythm
        for i, d in enumerate(CAMS):
            value = (2000 + 300 * i) * day * (1 + rng.normal(0, 0.005))
            if ts >= T0 + 2 * 3600:
                value *= scale.get(d.device_id, 1.0)
            out.append(Record(d, ts + i * 0.1, {"upload_kbps": float(value)}))
    return out


def raised(changes: list[Transition]) -> list[Transition]:
    return [t for t in changes if t.firing]


def test_a_doubled_upload_raises_with_evidence_at_its_first_window() -> None:
    changes = make(metric="upload_kbps", window_s=300, checks=["jump"]).update(
        stream(4, {"cam-1": 1.9})
    )
    [alert] = raised(changes)
    assert alert.device.device_id == "cam-1"
    assert T0 + 2 * 3600 < alert.ts <= T0 + 2 * 3600 + 900  # the first whole window
    assert alert.evidence["condition"] == "jump"
    moved = alert.evidence["log_ratio"] - alert.evidence["expected_log_ratio"]  # type: ignore[operator]
    assert np.log(1.8) < moved < np.log(2.0)


def test_the_whole_zone_moving_together_does_not_raise() -> None:
    everyone = {d.device_id: 1.4 for d in CAMS}  # a festival night: every camera streams more
    assert raised(make(metric="upload_kbps", window_s=300).update(stream(4, everyone))) == []


def test_a_jump_under_the_floor_does_not_raise() -> None:
    detector = make(metric="upload_kbps", window_s=300, checks=["jump"])
    assert raised(detector.update(stream(4, {"cam-2": 1.4}))) == []


def test_a_slow_drift_raises_on_the_slope_and_a_steady_device_does_not() -> None:
    rng = np.random.default_rng(5)
    counters = [DeviceRef("lyon", "croix-rousse", "mobility", f"mob-{i}") for i in range(3)]
    records = []
    for n in range(12 * 120):
        ts = T0 + n * 30.0
        for i, d in enumerate(counters):
            lam = 30.0 * (i + 1)
            if d.device_id == "mob-0":
                lam *= 1 + 0.04 * n * 30.0 / 3600.0
            records.append(Record(d, ts, {"vehicles": float(rng.poisson(lam))}))
    detector = make(
        metric="vehicles", window_s=1800, checks=["slope"], counts=True, min_peers=1, slope_t=5.0
    )
    alerts = raised(detector.update(records))
    assert [t.device.device_id for t in alerts] == ["mob-0"]
    assert alerts[0].evidence["condition"] == "slope"
    assert 0.02 < alerts[0].evidence["slope_per_hour"] < 0.06  # type: ignore[operator]


def test_forget_drops_the_device() -> None:
    detector = make(metric="upload_kbps")
    detector.update(stream(0.5, {}))
    assert detector.tracked_devices() == 4
    detector.forget({"cam-0"})
    assert detector.tracked_devices() == 3


def test_without_tenant_fallback_a_device_alone_in_its_zone_is_not_compared() -> None:
    lone = DeviceRef("lyon", "presquile", "video", "cam-alone")
    records = [
        *stream(4, {}),
        *[Record(lone, T0 + 2 * 3600 + 30 * n, {"upload_kbps": 9000.0}) for n in range(100)],
    ]
    records.sort(key=lambda r: r.ts)
    with_fallback = make(metric="upload_kbps", window_s=300, checks=["jump"], min_peers=1)
    assert raised(with_fallback.update(records)) == []  # no history of it yet: no jump
    records += [Record(lone, T0 + 30 * n, {"upload_kbps": 2000.0}) for n in range(200)]
    records.sort(key=lambda r: r.ts)
    with_fallback = make(metric="upload_kbps", window_s=300, checks=["jump"], min_peers=1)
    alone = make(
        metric="upload_kbps", window_s=300, checks=["jump"], min_peers=1, tenant_fallback=False
    )
    assert [t.device for t in raised(with_fallback.update(records))] == [lone]
    assert raised(alone.update(records)) == []


def test_a_device_joining_and_leaving_the_zone_does_not_move_its_peers() -> None:
    # Three counters of very different sizes; a fourth (rogue) one joins for 4 h and leaves.
    rng = np.random.default_rng(9)
    counters = [DeviceRef("lyon", "confluence", "mobility", f"mob-{i}") for i in range(3)]
    rogue = DeviceRef("lyon", "confluence", "mobility", "mob-rogue")
    records = []
    for n in range(24 * 120):
        ts = T0 + n * 30.0
        here = [*counters, rogue] if 11 * 3600 <= n * 30.0 < 15 * 3600 else counters
        for i, d in enumerate(here):
            lam = 2.0 if d == rogue else 5.0 * 4**i
            records.append(Record(d, ts, {"vehicles": float(rng.poisson(lam))}))

    def alerts(**params: object) -> list[Transition]:
        detector = make(
            metric="vehicles",
            window_s=1800,
            checks=["slope"],
            counts=True,
            min_peers=1,
            slope_windows=48,
            history=48,
            min_history=8,
            min_slope=0.01,
            slope_t=4.0,
            **params,
        )
        return raised(detector.update(records))

    joined = T0 + 11 * 3600
    # Only alerts from the join on are about it (a test of many looks at t >= 4 has a tail:
    # an unrelated early one may come, see docs/detectors.md).
    assert [t for t in alerts() if t.ts >= joined] == []
    # Taking every present device as a peer at once, the rogue's coming and going moves the
    # median: this is what `peer_after` is for.
    assert [t for t in alerts(peer_after=0) if t.ts >= joined] != []


def test_a_saved_history_holding_anything_but_numbers_is_refused() -> None:
    """A state file is attacker-writable: its float arrays decode to numbers or not at all."""
    for code in ("d", "f"):
        saved = state_codec.encode(array(code, [1.0, 2.5]))
        assert state_codec.decode(saved) == array(code, [1, 2.5])
    for bad in (["1.0"], [True], [{"$device": ["a", "b", "c", "d"]}]):
        with pytest.raises(state_codec.StateError, match="float array"):
            state_codec.decode({"$floats": bad})
    with pytest.raises(state_codec.StateError, match="float array"):
        state_codec.decode({"$floats": [1.0], "typecode": "q"})


def test_peer_references_by_rank_equal_the_median_of_the_others() -> None:
    """A window's close sorts each group once and reads every device's leave-one-out median
    by rank (linear in the zone, not quadratic): checked against `statistics.median` of the
    others themselves, with ties, established and new members, and every `min_peers`."""
    rng = np.random.default_rng(11)
    for trial in range(300):
        size = int(rng.integers(1, 12))
        refs = [DeviceRef("t", "z", "video", f"d{trial}-{i}") for i in range(size)]
        logs = {
            r: float(rng.choice([0.5, 1.0, 1.25]) if trial % 3 == 0 else rng.normal()) for r in refs
        }
        totals = {r: float(rng.integers(1, 500)) for r in refs}
        known = [r for r in refs if rng.random() < 0.6]
        peers = _Peers(logs, totals, known)
        for ref in refs:
            others = [o for o in refs if o != ref]
            if others:
                expected_level = statistics.median(float(np.exp(logs[o])) for o in others)
                assert peers.level.median(without=ref) == expected_level
            for min_peers in (1, 2, 3):
                settled = [o for o in others if o in known]
                used = settled if len(settled) >= min_peers else others
                if not used:
                    continue
                index, pooled, count = peers.index(ref, min_peers)
                assert index == statistics.median(logs[o] for o in used)
                assert pooled == sum(totals[o] for o in used)
                assert count == len(used)


# --- Batches as columns: the same transitions however the stream is cut -------------------

# The two settings of deploy/eval.toml.
CAMERA_UPLOAD = {"metric": "upload_kbps", "checks": ["jump"], "window_s": 300, "min_peers": 1}
COUNTER_DRIFT = {
    "metric": "vehicles",
    "checks": ["slope"],
    "counts": True,
    "window_s": 1800,
    "min_peers": 1,
    "tenant_fallback": False,
    "min_level": 0.2,
    "history": 48,
    "slope_windows": 48,
    "min_history": 8,
    "min_slope": 0.01,
    "slope_t": 4.0,
}


def awkward_stream() -> list[Record]:
    """Cameras and counters of two zones in one stream (two kinds), with what a per-record
    loop meets: a camera that doubles for an hour (raise, clear), one that doubles for good
    (adopted), a counter inflated 4 %/h then repaired (slope raise, clear), late and
    shuffled records, a clock running ahead (it closes windows early), reports without the
    metric or with NaN/inf, a device joining late and one leaving."""
    rng = np.random.default_rng(21)
    cams = [
        DeviceRef("lyon", z, "video", f"cam-{z}-{i}")
        for z in ("gerland", "part-dieu")
        for i in range(4)
    ]
    lone = DeviceRef("lyon", "fourviere", "video", "cam-lone")  # compared with the tenant's
    counters = [DeviceRef("lyon", "croix-rousse", "mobility", f"mob-{i}") for i in range(4)]
    out: list[Record] = []
    for n in range(14 * 60):
        ts = T0 + n * 60.0
        hour = n / 60
        for i, d in enumerate([*cams, lone]):
            if d == cams[7] and hour >= 11:
                continue  # leaves
            if d == lone and hour < 1.5:
                continue  # joins late
            value = (1500 + 200 * i) * (1 + rng.normal(0, 0.01))
            if d == cams[1] and 3 <= hour < 4:
                value *= 2.0
            if d == cams[5] and hour >= 5:
                value *= 2.0
            skew = 250.0 if d == cams[2] and n % 97 == 0 else 0.0  # a clock ahead
            late = -420.0 if d == cams[3] and n % 13 == 0 else 0.0
            metrics: dict[str, float] = {"upload_kbps": float(value)}
            if n % 29 == i:
                metrics = {"fps": 25.0}
            elif n % 31 == i:
                metrics["upload_kbps"] = float("nan") if n % 2 else float("inf")
            out.append(Record(d, ts + i * 0.5 + skew + late, metrics))
        for i, d in enumerate(counters):
            lam = 20.0 * (i + 1)
            if d == counters[0]:
                lam *= (1 + 0.04 * min(hour, 9.0)) if hour < 11 else 1.0
            out.append(Record(d, ts + 7 + i, {"vehicles": float(rng.poisson(lam))}))
    # Arrival order is not time order: shuffle within runs of 6 records.
    for start in range(0, len(out), 6):
        run = out[start : start + 6]
        rng.shuffle(run)
        out[start : start + 6] = run
    return out


def cuts(size: int, rng: np.random.Generator) -> dict[str, list[int]]:
    """Batch boundaries: fixed sizes, the whole stream, random cuts."""
    out = {f"{k} at a time": list(range(0, size, k)) for k in (1, 7, 500)}
    out["whole"] = [0]
    for trial in range(3):
        inner = sorted(rng.choice(np.arange(1, size), size=40 + 60 * trial, replace=False))
        out[f"random {trial}"] = [0, *inner]
    return out


def by_columns(
    detector: Detector, records: list[Record], starts: list[int], table: DeviceTable
) -> list[Transition]:
    ends = [*starts[1:], len(records)]
    changes: list[Transition] = []
    for a, b in zip(starts, ends, strict=True):
        changes += detector.update_columns(Columns.of(records[a:b], table))
    return changes


@pytest.mark.parametrize("params", [CAMERA_UPLOAD, COUNTER_DRIFT], ids=["camera", "counter"])
def test_any_cut_of_the_stream_into_column_batches_gives_the_same_transitions(
    params: dict[str, object],
) -> None:
    records = awkward_stream()
    straight = make(**params)
    reference = straight.update(records)
    # Not a vacuous comparison: the stream raises and clears.
    assert {t.firing for t in reference} == {True, False}, reference
    rng = np.random.default_rng(4)
    devices = list(dict.fromkeys(r.device for r in records))
    for name, starts in cuts(len(records), rng).items():
        # An engine's table holds the other detectors' devices too, given slots in the
        # order they saw them first: slots in another order than this detector's.
        table = DeviceTable()
        others = [DeviceRef("x", "y", "video", f"other-{i}") for i in range(20)]
        table.slots([*others, *devices][:: -1 if len(starts) % 2 else 1])
        detector = make(**params)
        got = by_columns(detector, records, starts, table)
        assert repr(got) == repr(reference), name
        assert detector.state_dict() == straight.state_dict(), name


@pytest.mark.parametrize("params", [CAMERA_UPLOAD, COUNTER_DRIFT], ids=["camera", "counter"])
def test_a_checkpoint_taken_between_two_batches_carries_on_identically(
    params: dict[str, object],
) -> None:
    records = awkward_stream()
    reference = make(**params).update(records)
    rng = np.random.default_rng(8)
    starts = [0, *sorted(rng.choice(np.arange(1, len(records)), size=80, replace=False))]
    for at in (len(starts) // 3, len(starts) // 2, 2 * len(starts) // 3):
        first = make(**params)
        before = by_columns(first, records[: starts[at]], starts[:at], DeviceTable())
        saved = json.loads(json.dumps(first.state_dict(), allow_nan=False))
        restored = make(**params)
        restored.load_state(saved)  # a new process: a new table, other slots
        assert restored.state_dict() == saved
        table = DeviceTable()
        table.slots([DeviceRef("x", "y", "video", "first-come")])
        rest = [s - starts[at] for s in starts[at:]]
        after = by_columns(restored, records[starts[at] :], rest, table)
        assert repr(before + after) == repr(reference), at


def test_a_detector_keeps_to_the_device_table_it_was_given() -> None:
    detector = make(**CAMERA_UPLOAD)
    records = stream(0.5, {})
    detector.update_columns(Columns.of(records[:10], DeviceTable()))
    with pytest.raises(ValueError, match="another device table"):
        detector.update_columns(Columns.of(records[10:], DeviceTable()))


def test_saved_window_sums_that_do_not_fit_are_refused() -> None:
    """A state file is attacker-writable: the sums must be one (window, total, count) per
    device, in the ranges arrays hold exactly; a refused state leaves the detector as it was."""
    detector = make(**CAMERA_UPLOAD)
    detector.update(stream(0.5, {}))
    state = detector.state_dict()
    learned = state["learned"]
    pairs = learned["sums_"]["$map"]

    def first_sum(value: object) -> dict[str, object]:
        return {"$map": [[pairs[0][0], value], *pairs[1:]]}

    wrong: list[object] = [
        None,
        [],
        {"$map": pairs[1:]},  # a device without its sums
        first_sum("x"),
        first_sum({"$tuple": [0, 1.0]}),
        first_sum({"$tuple": [0, 1, 2]}),
        first_sum({"$tuple": [0, 1.0, 2**70]}),
        first_sum({"$tuple": [0, 1.0, -1]}),
        first_sum({"$tuple": [2**60, 1.0, 2]}),
    ]
    fresh = make(**CAMERA_UPLOAD)
    fresh.load_state({**state, "learned": {**learned, "sums_": first_sum(pairs[0][1])}})
    assert fresh.state_dict() == state  # the corruption helper itself keeps a good state
    for bad in wrong:
        fresh = make(**CAMERA_UPLOAD)
        with pytest.raises(state_codec.StateError):
            fresh.load_state({**state, "learned": {**learned, "sums_": bad}})
        assert fresh.tracked_devices() == 0


def test_a_forgotten_device_leaves_nothing_to_the_one_that_takes_its_slot() -> None:
    """Forgotten in the middle of a window: a device that comes next (its slot reused) sums
    from zero, as if the forgotten one had never reported."""
    newcomer = DeviceRef("lyon", "gerland", "video", "cam-new")
    records = stream(2, {})
    early = [r for r in records if r.ts < T0 + 100]  # inside the first window
    rest = [
        Record(newcomer if r.device == CAMS[0] else r.device, r.ts, r.metrics)
        for r in records
        if r.ts >= T0 + 100
    ]
    forgetting = make(**CAMERA_UPLOAD)
    forgetting.update(early)
    forgetting.forget({"cam-0"})
    never = make(**CAMERA_UPLOAD)
    never.update([r for r in early if r.device != CAMS[0]])
    assert forgetting.state_dict() == never.state_dict()
    assert repr(forgetting.update(rest)) == repr(never.update(rest))
    assert forgetting.state_dict() == never.state_dict()
