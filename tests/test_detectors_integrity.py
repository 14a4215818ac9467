from __future__ import annotations

import itertools
import json
import random

import pytest
from pydantic import ValidationError

from detectors import registry
from detectors.columns import Columns
from detectors.integrity import Integrity, IntegrityParams
from detectors.model import DeviceRef, Record, Transition
from detectors.slots import DeviceTable

T0 = 1_700_000_000.0
TC = DeviceRef("lyon", "part-dieu", "mobility", "tc-1")
OTHER = DeviceRef("lyon", "part-dieu", "mobility", "tc-2")


def make(**params: object) -> Integrity:
    detector = registry.create("integrity", registry.parse_params("integrity", params))
    assert isinstance(detector, Integrity)
    return detector


def normal(n: int, device: DeviceRef = TC, start: float = T0, seq0: int = 0) -> list[Record]:
    return [Record(device, start + 30 * i, {"speed_kmh": 40.0 + i % 5}, seq0 + i) for i in range(n)]


def checks(out: list[Transition]) -> list[tuple[bool, object]]:
    return [(t.firing, t.evidence.get("check")) for t in out]


def test_a_replayed_message_raises_with_evidence_at_stream_time() -> None:
    det = make()
    records = normal(100)
    old = records[40]
    out = det.update([*records, old])
    assert checks(out) == [(True, "replayed")]
    ev = out[0].evidence
    assert (ev["seq"], ev["max_seq"], ev["age_s"]) == (40, 99, 59 * 30)
    assert out[0].ts == records[-1].ts  # the alert starts now, not at the replayed time


def test_qos1_redelivery_is_not_a_finding_but_a_second_publisher_is() -> None:
    det = make()
    records = normal(20)
    assert det.update([*records, records[-1]]) == []  # the same message twice
    forged = Record(TC, records[-1].ts + 0.4, {"speed_kmh": 9.0}, records[-1].seq)
    assert checks(det.update([forged])) == [(True, "duplicate seq")]


def test_a_restarted_counter_is_not_a_replay() -> None:
    det = make()
    assert det.update([*normal(50), *normal(10, start=T0 + 3600, seq0=0)]) == []


def test_time_going_backwards_without_seq() -> None:
    det = make()
    records = [Record(TC, T0 + 30 * i, {"speed_kmh": 40.0}) for i in range(10)]
    assert det.update(records) == []
    out = det.update([Record(TC, T0 + 100, {"speed_kmh": 40.0})])
    assert checks(out) == [(True, "time backwards")]
    # Within the tolerance (clock jitter) nothing happens.
    det = make()
    assert det.update([*records, Record(TC, records[-1].ts - 0.5, {"speed_kmh": 40.0})]) == []


def test_impossible_values_from_the_default_table_and_from_config() -> None:
    det = make()
    out = det.update([*normal(5), Record(TC, T0 + 200, {"speed_kmh": 480.0}, 5)])
    assert checks(out) == [(True, "impossible value")]
    assert (out[0].evidence["expected_low"], out[0].evidence["expected_high"]) == (0.0, 250.0)
    det = make(bounds={"speed_kmh": [0, 90]})
    assert checks(det.update([Record(TC, T0, {"speed_kmh": 120.0}, 0)])) == [
        (True, "impossible value")
    ]
    det = make(default_bounds=False)
    assert det.update([Record(TC, T0, {"speed_kmh": 480.0}, 0)]) == []
    assert make().update([Record(TC, T0, {"speed_kmh": float("nan")}, 0)]) == []


def test_clears_after_clean_reports() -> None:
    det = make(clear_after=3)
    bad = Record(TC, T0, {"occupancy_pct": 140.0}, 0)
    out = det.update([bad, *normal(5, start=T0 + 30, seq0=1)])
    assert [t.firing for t in out] == [True, False]
    assert out[1].ts == T0 + 30 * 3


def test_stuck_value_only_for_a_metric_that_normally_moves() -> None:
    det = make(stuck_metrics=["speed_kmh", "flag"], stuck_after=10, stuck_min_changes=5)
    moving = [
        Record(TC, T0 + 30 * i, {"speed_kmh": 40.0 + i % 5, "flag": 1.0}, i) for i in range(40)
    ]
    assert det.update(moving) == []  # `flag` never moved: a constant is no stuck sensor
    stuck = [Record(TC, T0 + 30 * i, {"speed_kmh": 42.0, "flag": 1.0}, i) for i in range(40, 60)]
    out = det.update(stuck)
    assert checks(out) == [(True, "stuck value")]
    assert out[0].evidence["metric"] == "speed_kmh"
    assert out[0].evidence["reports"] == 10


def test_clock_skew_against_the_fleet() -> None:
    det = make(max_skew_s=300, skew_min_reports=5)
    fleet = normal(60, OTHER)
    lagging = normal(60, TC, start=T0 - 1200)  # its clock is 20 min late
    merged = [r for pair in zip(fleet, lagging, strict=True) for r in pair]
    out = det.update(merged)
    assert [(t.device, t.evidence["check"]) for t in out] == [(TC, "clock skew")]
    assert out[0].evidence["skew_s"] == pytest.approx(-1200, abs=1)


def test_bounds_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="low must not exceed high"):
        IntegrityParams(bounds={"x": (5.0, 1.0)})


# --- the columnar path (update_columns) against the per-record code ------------------------

STUCK = {"stuck_metrics": ["driver_temp_c", "bitrate_kbps"], "stuck_after": 8}
STUCK_PARAMS = {**STUCK, "stuck_min_changes": 3, "skew_min_reports": 4, "max_skew_s": 300}


CHECKS = [
    "replayed",
    "duplicate seq",
    "time backwards",
    "clock skew",
    "impossible value",
    "stuck value",
]


def tampered_stream(seed: int = 5, devices: int = 40, rounds: int = 120) -> list[Record]:
    """Interleaved reports of many devices (segments long enough for the array path), with
    every kind of finding and of rare path: replays, duplicates, redeliveries, restarted
    counters, time going back (beyond and within the tolerance), devices without seq, a
    lagging clock, impossible and stuck values, devices firing and clearing, new devices."""
    rng = random.Random(seed)
    refs = [DeviceRef("lyon", f"z{i % 3}", "lighting", f"l-{i}") for i in range(devices)]
    sent: dict[DeviceRef, list[Record]] = {ref: [] for ref in refs}
    out: list[Record] = []
    for n in range(rounds):
        order = refs[: 10 + n * devices // rounds] if n < rounds // 2 else refs  # new devices
        for k, ref in enumerate(rng.sample(order, len(order))):
            lag = -1500.0 if ref in refs[5::13] and n < 80 else 0.0  # a clock 25 min behind
            ts = T0 + 60 * n + rng.random() * 5 + lag
            seq: int | None = None if k % 11 == 3 else len(sent[ref])
            temp = 40.0 + rng.choice((0.0, 0.5, 1.0)) if not 50 < n < 70 or k % 4 else 41.0
            metrics = {"driver_temp_c": temp, "power_w": 100.0 + rng.random()}
            if ref in refs[2::7] and n < 20:
                del metrics["driver_temp_c"]  # a watched metric that comes later
            roll = rng.random()
            if roll < 0.01:
                metrics["power_w"] = 9_000.0  # impossible
            elif roll < 0.02 and len(sent[ref]) > 20:
                out.append(sent[ref][-15])  # replayed
            elif roll < 0.03 and sent[ref]:
                out.append(sent[ref][-1])  # redelivered (an exact copy)
            elif roll < 0.04 and seq is not None and sent[ref]:
                last = sent[ref][-1]
                out.append(Record(ref, last.ts + 0.3, metrics, last.seq))  # duplicate seq
            elif roll < 0.05:
                ts -= rng.choice((0.5, 400.0))  # jitter within the tolerance, or back
            elif roll < 0.055 and seq is not None:
                sent[ref].clear()  # the device restarts its counter
                seq = 0
            record = Record(ref, ts, metrics, seq)
            sent[ref].append(record)
            out.append(record)
    return out


def fed_in_cuts(records: list[Record], cuts: list[int], **params: object) -> tuple[str, str]:
    """The transitions (repr) and the state at the end (JSON: floats to the last bit)."""
    det, table = make(**params), DeviceTable()
    out: list[Transition] = []
    for start, stop in itertools.pairwise([0, *cuts, len(records)]):
        out += det.update_columns(Columns.of(records[start:stop], table))
    return repr(out), json.dumps(det.state_dict())


def test_every_cut_of_the_stream_gives_the_same_transitions() -> None:
    records = tampered_stream()
    # One record per batch: every segment is one row, so every row goes through the per-
    # record code; the larger batches clear most rows with array operations.
    expected = fed_in_cuts(records, list(range(1, len(records))), **STUCK_PARAMS)
    found = [c for c in CHECKS if f"'check': '{c}'" in expected[0]]
    assert found == CHECKS
    assert "'clean_reports'" in expected[0]  # and clears
    rng = random.Random(3)
    for size in (7, 500, len(records)):
        cuts = list(range(size, len(records), size))
        assert fed_in_cuts(records, cuts, **STUCK_PARAMS) == expected, size
    for _ in range(3):
        cuts = sorted(rng.sample(range(1, len(records)), 40))
        assert fed_in_cuts(records, cuts, **STUCK_PARAMS) == expected


def test_a_checkpoint_taken_mid_stream_continues_identically() -> None:
    records = tampered_stream(seed=8)
    half = len(records) // 2
    straight, table = make(**STUCK_PARAMS), DeviceTable()
    first = straight.update_columns(Columns.of(records[:half], table))
    saved = json.dumps(straight.state_dict(), allow_nan=False)
    rest = straight.update_columns(Columns.of(records[half:], table))
    restored = make(**STUCK_PARAMS)
    restored.load_state(json.loads(saved))
    assert restored.tracked_devices() == straight.tracked_devices()
    # Into another engine's table (slots differ), in other batches.
    other = DeviceTable()
    other.slots([DeviceRef("x", "y", "z", "first")])
    again = []
    for start in range(half, len(records), 333):
        again += restored.update_columns(Columns.of(records[start : start + 333], other))
    assert first  # the stream raised before the checkpoint and after it
    assert rest
    assert repr(again) == repr(rest)


def test_one_device_table_only_and_forget_resets_the_slots() -> None:
    det, table = make(), DeviceTable()
    det.update_columns(Columns.of(normal(20), table))
    with pytest.raises(ValueError, match="another device table"):
        det.update_columns(Columns.of(normal(1, start=T0 + 900, seq0=20), DeviceTable()))
    det.forget({TC.device_id})
    assert det.tracked_devices() == 0
    table.release({TC.device_id})
    # The slot goes to another device: it starts afresh (no replay of TC's seq 19).
    det.update_columns(Columns.of([Record(OTHER, T0 + 900, {"speed_kmh": 1.0}, 3)], table))
    assert det.update_columns(Columns.of(normal(3, OTHER, T0 + 930, seq0=4), table)) == []
    assert det.tracked_devices() == 1
