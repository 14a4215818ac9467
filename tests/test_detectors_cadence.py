from __future__ import annotations

from collections.abc import Iterable

import pytest
from pydantic import ValidationError

from detectors import registry
from detectors.cadence import Cadence, CadenceParams
from detectors.model import DeviceRef, Record, Transition

T0 = 1_700_000_000.0
CAM = DeviceRef("lyon", "gerland", "video", "cam-1")
CAM2 = DeviceRef("lyon", "gerland", "video", "cam-2")
LAMPS = [DeviceRef("lyon", "gerland", "lighting", f"lum-{i}") for i in range(3)]


def make(**params: object) -> Cadence:
    detector = registry.create("cadence", registry.parse_params("cadence", params))
    assert isinstance(detector, Cadence)
    return detector


def stream(
    devices: Iterable[DeviceRef], start: float, end: float, step: float, skip: object = None
) -> list[Record]:
    """Reports of each device every `step` s in [start, end), in time order."""
    out = []
    for j, d in enumerate(devices):
        t = start + j * 0.1
        while t < end:
            if skip is None or not skip(d, t):  # type: ignore[operator]
                out.append(Record(d, t, {"x": 1.0}))
            t += step
    return sorted(out, key=lambda r: r.ts)


def raised(transitions: list[Transition]) -> list[Transition]:
    return [t for t in transitions if t.firing]


def test_silence_raises_on_stream_time_and_clears_on_the_next_report() -> None:
    det = make()
    # cam-1 reports every 10 s for an hour, then stops; the lamps keep reporting.
    records = stream([CAM], T0, T0 + 3600, 10) + stream(LAMPS, T0, T0 + 7200, 60)
    records.sort(key=lambda r: r.ts)
    out = det.update(records)
    silences = raised(out)
    assert [t.device for t in silences] == [CAM]
    t = silences[0]
    # Silent for max(10 intervals, 600 s) = 600 s after its last report, seen on the lamps' time.
    assert 600 <= t.ts - (T0 + 3590) <= 660
    assert t.evidence["condition"] == "silence"
    assert t.evidence["interval_s"] == pytest.approx(10, rel=0.01)
    back = det.update([Record(CAM, T0 + 7300, {"x": 1.0})])
    assert [(t.device, t.firing) for t in back] == [(CAM, False)]


def test_no_silence_without_other_devices_moving_time() -> None:
    det = make()
    det.update(stream([CAM], T0, T0 + 3600, 10))
    assert det.update([]) == []  # no record: the stream's time has not moved


def test_a_zone_outage_across_kinds_does_not_raise_but_dark_cameras_alone_do() -> None:
    def cut(d: DeviceRef, t: float) -> bool:
        return T0 + 3600 <= t < T0 + 3600 + 2700  # 45 min, every device of the zone

    zone = [CAM, CAM2, *LAMPS]
    elsewhere = [DeviceRef("lyon", "vaise", "lighting", "lum-far")]
    det = make()
    both = stream(zone, T0, T0 + 3 * 3600, 10, cut) + stream(elsewhere, T0, T0 + 3 * 3600, 60)
    out = det.update(sorted(both, key=lambda r: r.ts))
    assert raised(out) == []

    def cameras_only(d: DeviceRef, t: float) -> bool:
        return d.kind == "video" and cut(d, t)

    det = make()
    out = det.update(sorted(stream(zone, T0, T0 + 3 * 3600, 10, cameras_only), key=lambda r: r.ts))
    assert {t.device for t in raised(out)} == {CAM, CAM2}
    assert all(not t.firing for t in out if t.device in (CAM, CAM2) and t.ts > T0 + 6300)


def test_a_short_silence_under_the_floor_does_not_raise() -> None:
    def reboot(d: DeviceRef, t: float) -> bool:
        return d == CAM and T0 + 3600 <= t < T0 + 3600 + 180  # 3 min

    det = make()
    assert raised(det.update(stream([CAM, *LAMPS], T0, T0 + 7200, 10, reboot))) == []


def test_flood_raises_then_clears_and_the_interval_is_not_learned_from_it() -> None:
    det = make()
    normal = stream([CAM], T0, T0 + 1800, 10)
    flood = [
        Record(CAM, t + dt, {"x": 1.0})
        for t in range(int(T0 + 1800), int(T0 + 2400), 10)
        for dt in (0, 0.2, 0.4)
    ]
    after = stream([CAM], T0 + 2400, T0 + 3600, 10)
    out = det.update(normal + flood + after)
    assert [(t.firing, t.evidence["condition"]) for t in out] == [(True, "flood"), (False, "flood")]
    assert T0 + 1800 < out[0].ts < T0 + 1900  # 3x the rate: a handful of intervals
    assert out[0].evidence["interval_s"] == pytest.approx(10, rel=0.05)
    assert det.devices_[CAM].interval == pytest.approx(10, rel=0.05)


def test_replayed_old_messages_count_as_extra_messages() -> None:
    det = make()
    normal = stream([CAM], T0, T0 + 3600, 10)
    replayed = []
    for r in normal:
        replayed.append(r)
        if r.ts > T0 + 1800:
            replayed.append(Record(CAM, r.ts - 1800, r.metrics))  # old ts
    out = det.update(replayed)
    assert [t.evidence["condition"] for t in raised(out)] == ["flood"]


def test_a_lasting_new_interval_is_adopted() -> None:
    det = make(adopt_after_s=3600)
    out = det.update(stream([CAM], T0, T0 + 3600, 10) + stream([CAM], T0 + 3600, T0 + 4 * 3600, 2))
    assert [t.firing for t in out] == [True, False]
    assert "adopted" in out[1].summary
    assert det.devices_[CAM].interval == pytest.approx(2, rel=0.1)


def test_forget_drops_the_device_and_its_silence_check() -> None:
    det = make()
    det.update(stream([CAM, *LAMPS], T0, T0 + 1800, 10))
    assert det.tracked_devices() == 4
    det.forget({CAM.device_id})
    assert det.tracked_devices() == 3
    assert all(ref != CAM for _, ref in det.heap_)
    assert raised(det.update(stream(LAMPS, T0 + 1800, T0 + 7200, 60))) == []


def test_parameters_are_checked() -> None:
    with pytest.raises(ValidationError, match="overdue_factor"):
        CadenceParams(overdue_factor=12, silence_factor=10)


def test_a_new_device_that_leaves_before_it_settles_is_not_reported_silent() -> None:
    # cam-2 first reports 2 h into the stream (after learn_s), for 1 h, then leaves.
    records = stream(LAMPS, T0, T0 + 6 * 3600, 60) + stream([CAM2], T0 + 7200, T0 + 10800, 10)
    records.sort(key=lambda r: r.ts)
    assert raised(make(new_device_settle_s=4 * 3600).update(records)) == []
    # Without the settle period (the default), the same silence raises.
    assert [t.device for t in raised(make().update(records))] == [CAM2]
    # A device seen in the learning period raises as before, settle period or not.
    early = stream(LAMPS, T0, T0 + 6 * 3600, 60) + stream([CAM2], T0, T0 + 3600, 10)
    early.sort(key=lambda r: r.ts)
    assert [t.device for t in raised(make(new_device_settle_s=4 * 3600).update(early))] == [CAM2]
