from __future__ import annotations

import pytest
from pydantic import ValidationError

from detectors import registry
from detectors.integrity import Integrity, IntegrityParams
from detectors.model import DeviceRef, Record, Transition

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
