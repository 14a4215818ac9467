"""SeasonalBaseline: seasonal profile, evidence, one alert per episode, level shifts, floors."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from detectors import registry
from detectors.base import Verdict
from detectors.model import DeviceRef, Record
from detectors.seasonal import SeasonalBaseline, SeasonalParams

LIGHT = DeviceRef("metropole", "centre", "lighting", "lamp-7")
STEP = 600.0  # 10 minutes
T0 = 1_704_067_200.0  # Monday 2024-01-01 00:00 UTC


def detector(**kw: Any) -> SeasonalBaseline:
    params = {"metrics": ["power_w"], **kw}
    d = registry.create("seasonal", registry.parse_params("seasonal", params))
    assert isinstance(d, SeasonalBaseline)
    return d


def lamp(ts: float, rng: np.random.Generator) -> float:
    """A street light: ~80 W at night, ~2 W standby by day."""
    hour = (ts % 86_400) / 3600
    night = hour < 6 or hour >= 18
    return float((80.0 if night else 2.0) + rng.normal(0, 1.0))


def run(d: SeasonalBaseline, values: list[tuple[float, float]]) -> list[Verdict]:
    records = [Record(LIGHT, ts, {"power_w": v}) for ts, v in values]
    out: list[Verdict] = []
    for start in range(0, len(records), 100):
        out.extend(d.decide(records[start : start + 100]))
    return out


def history(days: float, seed: int = 1) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    n = int(days * 86_400 / STEP)
    return [(T0 + i * STEP, lamp(T0 + i * STEP, rng)) for i in range(n)]


def test_registered_and_validated() -> None:
    assert registry.get("seasonal") is SeasonalBaseline
    with pytest.raises(ValidationError, match="does not divide"):
        SeasonalParams.model_validate({"metrics": ["x"], "bucket_minutes": 7})
    with pytest.raises(ValidationError, match="absolute_floor"):
        SeasonalParams.model_validate({"metrics": ["x"], "absolute_floor": {"y": 1.0}})
    with pytest.raises(ValidationError, match="metric name"):
        SeasonalParams.model_validate({"metrics": ["Bad-Name"]})
    with pytest.raises(ValidationError, match="extra"):
        SeasonalParams.model_validate({"metrics": ["x"], "unknown_key": 1})


def test_light_on_by_day_is_flagged_against_the_hour_of_day_profile() -> None:
    d = detector()
    base = history(6)
    run(d, base)
    # Day 7 at noon: the lamp burns at its night power; normal at night, not at noon.
    t_noon = T0 + 6 * 86_400 + 12 * 3600
    verdicts = run(d, [(t_noon + i * STEP, 80.0) for i in range(3)])
    raised = [v for v in verdicts if v.change == "raise"]
    assert len(raised) == 1
    v = raised[0]
    assert v.anomalous
    assert v.baseline in {"hour-of-day 12:00", "median of the last 128 values"}
    assert v.expected_high < 80.0
    t = v.transition()
    assert t.firing
    assert t.evidence["value"] == 80.0
    assert "expected" in t.summary


def test_night_power_at_night_is_not_flagged() -> None:
    d = detector()
    verdicts = run(d, history(8))
    late = [v for v in verdicts if v.ts > T0 + 3 * 86_400]
    assert sum(v.anomalous for v in late) <= 2  # a few hundred night/day switches, no alert storm


def test_one_alert_per_episode_then_clear() -> None:
    d = detector(quiet_seconds=6 * 3600, clear_after=2)
    run(d, history(5))
    t = T0 + 5 * 86_400 + 12 * 3600
    spike = [(t + i * STEP, 400.0 + i) for i in range(4)]
    back = [(t + (4 + i) * STEP, 2.0) for i in range(40)]
    verdicts = run(d, spike + back)
    changes = [(v.change, i) for i, v in enumerate(verdicts) if v.change]
    assert [c for c, _ in changes] == ["raise", "clear"]
    assert changes[0][1] == 0
    assert all(v.suppressed for v in verdicts[1:4])
    # The smoothed score decays over `smoothing` points; a value back in range that is still
    # flagged says why.
    assert changes[1][1] <= 4 + d.params.smoothing + d.params.clear_after
    assert {v.reason for v in verdicts[4:] if v.anomalous} <= {"sustained deviation"}


def test_flagged_points_are_not_learned_but_a_level_shift_is_adopted_once() -> None:
    d = detector(season="none", shift_after=6, new_extreme_margin=None)
    rng = np.random.default_rng(5)
    flat = [(T0 + i * STEP, 50.0 + rng.normal(0, 1)) for i in range(400)]
    run(d, flat)
    shifted = [(T0 + (400 + i) * STEP, 90.0 + rng.normal(0, 1)) for i in range(200)]
    verdicts = run(d, shifted)
    raises = [v for v in verdicts if v.change == "raise"]
    clears = [v for v in verdicts if v.change == "clear"]
    assert len(raises) == 1
    assert len(clears) == 1
    assert "level shift" in clears[0].reason
    assert clears[0].ts - raises[0].ts == 5 * STEP
    # Before adoption the baseline stayed at the old level (flagged points are not learned).
    assert all(abs(v.expected - 50.0) < 3 for v in verdicts[:5])
    # After adoption the new level is normal.
    assert not any(v.anomalous for v in verdicts[20:])
    assert abs(verdicts[-1].expected - 90.0) < 3


def test_learn_flagged_option_learns_everything() -> None:
    d = detector(season="none", learn_flagged=True, shift_after=10_000)
    rng = np.random.default_rng(5)
    run(d, [(T0 + i * STEP, 50.0 + rng.normal(0, 1)) for i in range(300)])
    verdicts = run(d, [(T0 + (300 + i) * STEP, 90.0) for i in range(200)])
    assert abs(verdicts[-1].expected - 90.0) < 1


def test_absolute_floor_under_the_relative_rule() -> None:
    # A very steady sensor: relative to its spread, +0.3 is huge; in watts it is nothing.
    values = [(T0 + i * STEP, 10.0 + 0.01 * (i % 3)) for i in range(400)]
    bump = [(T0 + (400 + i) * STEP, 10.3) for i in range(3)]
    loose = detector(season="none", new_extreme_margin=None, range_floor=0.0)
    run(loose, values)
    assert any(v.anomalous for v in run(loose, bump))
    floored = detector(
        season="none", new_extreme_margin=None, range_floor=0.0, absolute_floor={"power_w": 1.0}
    )
    run(floored, values)
    assert not any(v.anomalous for v in run(floored, bump))


def test_score_learns_nothing_and_learn_warms_up() -> None:
    d = detector()
    records = [Record(LIGHT, ts, {"power_w": v}) for ts, v in history(7)]
    d.learn(records)
    state = json.dumps(d.state_dict())
    probe = [Record(LIGHT, T0 + 7 * 86_400 + 12 * 3600, {"power_w": 80.0})]
    s = d.score(probe)
    assert s[0] >= d.params.threshold
    assert json.dumps(d.state_dict()) == state
    assert math.isnan(d.score([Record(LIGHT, T0, {"other": 1.0})])[0])


def test_memory_is_bounded_per_series_and_forget_works() -> None:
    d = detector(season="hour_of_week", metrics=["power_w", "temp_c"])
    run(d, history(3))
    size_3_days = len(json.dumps(d.state_dict()))
    run(d, history(9, seed=2)[int(3 * 86_400 / STEP) :])
    series = d.series_[(LIGHT, "power_w")]
    assert len(series.recent) == d.params.recent_size
    assert len(series.b_mean) == 168
    assert len(json.dumps(d.state_dict())) < 1.5 * size_3_days + 10_000
    assert d.tracked_devices() == 1
    d.forget({"lamp-7"})
    assert d.tracked_devices() == 0
    assert d.series_ == {}


def test_hour_of_week_buckets_start_on_monday_and_honour_utc_offset() -> None:
    d = detector(season="hour_of_week", bucket_minutes=60)
    names = d._baseline_name
    assert names is not None
    from detectors.seasonal import _bucket, _bucket_name  # noqa: PLC0415

    p = d.params
    assert _bucket(p, T0) == 0
    assert _bucket_name(p, 0) == "Mon 00:00"
    assert _bucket_name(p, _bucket(p, T0 + 2 * 86_400 + 13 * 3600)) == "Wed 13:00"
    paris = SeasonalParams.model_validate(
        {"metrics": ["x"], "season": "hour_of_week", "utc_offset_minutes": 60}
    )
    assert _bucket_name(paris, _bucket(paris, T0)) == "Mon 01:00"


def test_devices_and_metrics_are_independent() -> None:
    other = DeviceRef("metropole", "nord", "lighting", "lamp-9")
    d = detector(metrics=["power_w", "temp_c"])
    records = [
        Record(dev, ts, {"power_w": v, "temp_c": 20.0})
        for ts, v in history(2)
        for dev in (LIGHT, other)
    ]
    d.decide(records)
    assert d.tracked_devices() == 2
    assert set(d.series_) == {(dev, m) for dev in (LIGHT, other) for m in ("power_w", "temp_c")}


def flat_with_an_early_outlier(n: int = 3000) -> list[tuple[float, float]]:
    rng = np.random.default_rng(9)
    values = [(T0 + i * STEP, 50.0 + rng.normal(0, 1)) for i in range(n)]
    values[100] = (values[100][0], 500.0)  # one glitch, long ago
    return values


def test_range_points_lets_an_old_outlier_age_out() -> None:
    probe = [(T0 + 3000 * STEP, 200.0)]
    ever = detector(season="none")
    run(ever, flat_with_an_early_outlier())
    (v,) = run(ever, probe)
    assert v.baseline != "range ever seen"  # 200 is inside the range the glitch stretched
    windowed = detector(season="none", range_points=1000)
    run(windowed, flat_with_an_early_outlier())
    (v,) = run(windowed, probe)
    assert v.baseline == "range of about the last 1000 values"
    assert v.score == 1.0
    assert v.anomalous
    assert 50.0 < v.expected_high < 60.0  # the recent range, not the glitch
    assert v.reason == "above anything seen"


def test_range_points_memory_is_bounded_and_survives_a_restart() -> None:
    d = detector(season="none", range_points=160)
    run(d, flat_with_an_early_outlier(5000))
    series = d.series_[(LIGHT, "power_w")]
    assert len(series.blocks) == 17  # 16 full blocks of 10 points and the one filling
    assert sum(b[0] for b in series.blocks) <= 170
    state = json.loads(json.dumps(d.state_dict(), allow_nan=False))
    restored = detector(season="none", range_points=160)
    restored.load_state(state)
    assert restored.state_dict() == d.state_dict()
    probe = [(T0 + 5000 * STEP + i * STEP, 58.0 - i) for i in range(5)]
    assert [v.score for v in run(restored, probe)] == [v.score for v in run(d, probe)]
    # A state saved before `range_points` existed (no blocks) still loads; blocks refill.
    for row in state["learned"]["series"]:
        del row["blocks"]
    older = detector(season="none", range_points=160)
    older.load_state(state)
    assert len(older.series_[(LIGHT, "power_w")].blocks) == 0


def office(days: float) -> list[tuple[float, float]]:
    """Lit on weekdays 08:00-18:00 (80 W), standby otherwise, weekends included."""
    rng = np.random.default_rng(4)
    out = []
    for i in range(int(days * 86_400 / STEP)):
        ts = T0 + i * STEP
        weekday, hour = int((ts - T0) // 86_400) % 7, (ts % 86_400) / 3600
        lit = weekday < 5 and 8 <= hour < 18
        out.append((ts, (80.0 if lit else 2.0) + float(rng.normal(0, 1.0))))
    return out


def test_day_fallback_needs_the_hour_of_week() -> None:
    with pytest.raises(ValidationError, match="day_fallback"):
        SeasonalParams.model_validate({"metrics": ["x"], "day_fallback": True})
    p = SeasonalParams.model_validate(
        {"metrics": ["x"], "season": "hour_of_week", "day_fallback": True}
    )
    assert (p.buckets, p.slots) == (168, 168 + 24)


def test_day_fallback_scores_against_the_day_until_the_week_has_learned() -> None:
    from detectors.seasonal import _bucket  # noqa: PLC0415

    week_only = detector(season="hour_of_week")
    d = detector(season="hour_of_week", day_fallback=True)
    history_ = office(8)  # 10-minute steps: 6 values a week per weekly bucket, 24 needed
    run(week_only, history_)
    run(d, history_)
    p = d.params
    saturday_noon = T0 + 12 * 86_400 + 12 * 3600
    bucket = _bucket(p, saturday_noon)
    weekly = week_only.series_[(LIGHT, "power_w")]
    assert weekly.evaluate(week_only.params, saturday_noon, 2.0).slot == -1  # no season yet
    ev = d.series_[(LIGHT, "power_w")].evaluate(p, saturday_noon, 80.0)
    assert ev.slot == p.buckets + 12
    assert ev.r_season is not None
    # Five weeks on, Saturday noon has its own bucket: standby is what is expected there.
    run(d, office(6 * 7)[len(history_) :])
    saturday_noon += 35 * 86_400
    series = d.series_[(LIGHT, "power_w")]
    ev = series.evaluate(p, saturday_noon, 2.0)
    assert ev.slot == bucket
    assert abs(series.b_mean[bucket] - 2.0) < 1.0
    assert 30.0 < series.b_mean[p.buckets + 12] < 80.0  # any day at noon: a weekday mix
    (v,) = run(d, [(saturday_noon, 80.0)])
    assert v.anomalous
    if v.baseline.startswith("hour-of-week"):
        assert v.baseline == "hour-of-week Sat 12:00"
    # The day profile is part of the state; a state without it does not fit.
    state = json.loads(json.dumps(d.state_dict()))
    assert len(state["learned"]["series"][0]["b_n"]) == p.slots
    with pytest.raises(ValueError, match="buckets"):
        detector(season="hour_of_week").load_state(state)


def zone_of_lamps(n: int, days: float = 6) -> list[Record]:
    lamps = [DeviceRef("metropole", "centre", "lighting", f"lamp-{i}") for i in range(n)]
    records = [
        Record(dev, ts, {"power_w": v})
        for k, dev in enumerate(lamps)
        for ts, v in history(days, seed=10 + k)
    ]
    return sorted(records, key=lambda r: r.ts)


@pytest.mark.parametrize("cold_start", [True, False])
def test_a_new_device_starts_from_a_peers_baseline(cold_start: bool) -> None:
    """A lamp that joins a zone of five learned lamps and burns at noon is flagged at once
    when `peer_cold_start` is on; otherwise it warms up on its own values first."""
    d = detector(peer_cold_start=cold_start, peer_min=3)
    d.decide(zone_of_lamps(5))
    newcomer = DeviceRef("metropole", "centre", "lighting", "lamp-new")
    noon = T0 + 6 * 86_400 + 12 * 3600  # by day a lamp draws ~2 W: 80 W is the anomaly
    verdicts = d.decide([Record(newcomer, noon + i * STEP, {"power_w": 80.0}) for i in range(3)])
    if not cold_start:
        assert [(v.anomalous, v.baseline) for v in verdicts] == [(False, "warming up")] * 3
        return
    assert [v.change for v in verdicts].count("raise") == 1
    assert all(v.anomalous for v in verdicts)
    assert all("cold start from peer lamp-" in v.baseline for v in verdicts)
    assert verdicts[0].expected_high < 80.0
    # A restart keeps where its baseline came from.
    restored = detector(peer_cold_start=True, peer_min=3)
    restored.load_state(json.loads(json.dumps(d.state_dict())))
    assert restored.series_[(newcomer, "power_w")].seeded_from.startswith("lamp-")


def test_cold_start_needs_enough_learned_peers_of_the_same_zone_and_kind() -> None:
    d = detector(peer_cold_start=True, peer_min=3)
    d.decide(zone_of_lamps(2))
    noon = T0 + 6 * 86_400 + 12 * 3600
    alone = DeviceRef("metropole", "centre", "lighting", "lamp-new")
    elsewhere = DeviceRef("metropole", "nord", "lighting", "lamp-far")
    verdicts = d.decide([Record(dev, noon, {"power_w": 80.0}) for dev in (alone, elsewhere)])
    assert [v.baseline for v in verdicts] == ["warming up", "warming up"]


def test_an_operator_rejects_an_adopted_level_shift() -> None:
    """After a shift is adopted, the operator says it is not normal: the old level comes back,
    the device raises again and the shift is not adopted again until it is back to normal."""
    d = detector(season="none", shift_after=6, new_extreme_margin=None)
    rng = np.random.default_rng(5)
    run(d, [(T0 + i * STEP, 50.0 + rng.normal(0, 1)) for i in range(400)])
    shifted = [(T0 + (400 + i) * STEP, 90.0 + rng.normal(0, 1)) for i in range(30)]
    raised, cleared = [v for v in run(d, shifted) if v.change]
    assert (raised.change, cleared.change) == ("raise", "clear")
    assert d.reject_new_normal(DeviceRef("elsewhere", "z", "lighting", "lamp-1"), raised.ts) == []
    assert d.reject_new_normal(LIGHT, cleared.ts + 1) == []  # nothing adopted since then
    (undone,) = d.reject_new_normal(LIGHT, raised.ts)
    assert undone.startswith("power_w: level shift of +4")  # about +40
    assert d.reject_new_normal(LIGHT, raised.ts) == []  # nothing left to undo
    still = [(T0 + (430 + i) * STEP, 90.0 + rng.normal(0, 1)) for i in range(100)]
    verdicts = run(d, still)
    assert [v.change for v in verdicts if v.change] == ["raise"]  # raised, never re-adopted
    assert all(v.anomalous and abs(v.expected - 50.0) < 3 for v in verdicts)
    # Back to normal: it clears, and a later shift is adopted as before.
    back = [(T0 + (530 + i) * STEP, 50.0 + rng.normal(0, 1)) for i in range(20)]
    assert [v.change for v in run(d, back) if v.change] == ["clear"]
    again = [(T0 + (550 + i) * STEP, 90.0 + rng.normal(0, 1)) for i in range(30)]
    changes = [(v.change, v.reason) for v in run(d, again) if v.change]
    assert [c for c, _ in changes] == ["raise", "clear"]
    assert "adopted" in changes[1][1]
