from __future__ import annotations

import json
import random
from collections.abc import Iterable

import pytest
from pydantic import ValidationError

from detectors import registry
from detectors.cadence import Cadence, CadenceParams, _Plan
from detectors.columns import Columns
from detectors.model import DeviceRef, Record, Transition
from detectors.slots import DeviceTable, Floats, Ints

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
    assert det.interval(CAM) == pytest.approx(10, rel=0.05)


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
    assert det.interval(CAM) == pytest.approx(2, rel=0.1)


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


# -- the columnar path: any cut of the stream, the same transitions ----------------------


def eventful_stream(seed: int) -> list[Record]:
    """Three zones of cameras, lamps and sensors reporting with jitter, in arrival order, with
    every kind of event cadence knows: cameras dark (silence, then back), a whole zone's power
    cut (an outage: no raise), a flood, a lasting faster interval (adopted), replayed old
    messages, duplicates, a late clock, and a rogue device that comes and leaves."""
    rng = random.Random(seed)
    zone_a = [DeviceRef("lyon", "gerland", "video", f"cam-{i}") for i in range(3)]
    zone_a += [DeviceRef("lyon", "gerland", "lighting", f"lum-{i}") for i in range(4)]
    zone_a += [DeviceRef("lyon", "gerland", "environment", f"air-{i}") for i in range(3)]
    zone_b = [DeviceRef("lyon", "vaise", "lighting", f"lum-b{i}") for i in range(3)]
    zone_b += [DeviceRef("lyon", "vaise", "video", f"cam-b{i}") for i in range(2)]
    # A quiet zone of many devices: long runs of plain reports between the events.
    zone_c = [DeviceRef("lyon", "part-dieu", "lighting", f"lum-c{i}") for i in range(24)]
    zone_c += [DeviceRef("lyon", "part-dieu", "environment", f"air-c{i}") for i in range(12)]
    step = {"video": 10.0, "lighting": 60.0, "environment": 30.0}
    end = T0 + 8 * 3600
    out: list[tuple[float, int, Record]] = []  # (arrival, tie, record)

    def send(device: DeviceRef, ts: float, arrival: float | None = None) -> None:
        out.append((ts if arrival is None else arrival, len(out), Record(device, ts, {})))

    for device in zone_a + zone_b + zone_c:
        t = T0 + rng.uniform(0, step[device.kind])
        while t < end:
            dark = (  # the cameras of zone A go dark for an hour; zone B's power is cut
                device.kind == "video"
                and device.zone == "gerland"
                and T0 + 2 * 3600 <= t < T0 + 3 * 3600
            ) or (device.zone == "vaise" and T0 + 4 * 3600 <= t < T0 + 4 * 3600 + 2700)
            if not dark:
                send(device, round(t, 3))
                if rng.random() < 0.01:
                    send(device, round(t, 3))  # a duplicate
            t += step[device.kind] * rng.uniform(0.9, 1.1)
    flooder, adopter, replayer = zone_a[3], zone_a[4], zone_a[7]
    for k in range(300):  # 3 messages per interval for 40 min
        t = T0 + 5 * 3600 + k * 8.0
        send(flooder, t + 0.5)
    t = T0 + 6 * 3600
    while t < end:  # every 5 s from 6 h: far more than its interval, for good
        send(adopter, t + 0.25)
        t += 5.0
    for k in range(40):  # old messages replayed
        t = T0 + 3 * 3600 + k * 30.0
        send(replayer, t - 3000.0, arrival=t + 0.1)
    late = zone_b[0]
    for k in range(20):  # a clock running 20 min late
        t = T0 + 7 * 3600 + k * 60.0
        send(late, t - 1200.0, arrival=t + 0.2)
    rogue = DeviceRef("lyon", "gerland", "video", "cam-rogue")
    for k in range(60):
        send(rogue, T0 + 2.5 * 3600 + k * 10.0 + 0.05)
    out.sort(key=lambda item: (item[0], item[1]))
    return [record for _, _, record in out]


def by_columns(
    det: Cadence, records: list[Record], cuts: Iterable[int], table: DeviceTable | None = None
) -> list[Transition]:
    table = DeviceTable() if table is None else table
    out: list[Transition] = []
    start = 0
    for end in [*cuts, len(records)]:
        out += det.update_columns(Columns.of(records[start:end], table))
        start = end
    return out


def sizes(n: int, size: int) -> list[int]:
    return list(range(size, n, size))


class PerRecord(Cadence):
    """Every row through the per-record code: the reference for the array path."""

    def _plan(self, slots: Ints, ts: Floats) -> _Plan:
        plan = super()._plan(slots, ts)
        plan.special[:] = True
        return plan


def test_any_cut_of_the_stream_gives_the_per_record_transitions() -> None:
    params = {"adopt_after_s": 1800.0, "new_device_settle_s": 3600.0}
    records = eventful_stream(7)
    per_record = PerRecord(CadenceParams(**params))
    reference = per_record.update(records)
    conditions = {(t.evidence["condition"], t.firing) for t in reference}
    assert conditions == {("silence", True), ("silence", False), ("flood", True), ("flood", False)}
    assert any("adopted" in t.summary for t in reference)
    silent = {t.device.device_id for t in reference if t.evidence["condition"] == "silence"}
    assert silent == {"cam-0", "cam-1", "cam-2"}  # not zone B's outage, not the rogue
    expected = repr(reference)
    rng = random.Random(3)
    n = len(records)
    cuts = [sizes(n, 1), sizes(n, 7), sizes(n, 500), []]
    cuts += [sorted(rng.sample(range(1, n), k)) for k in (5, 60, 900)]
    for cut in cuts:
        det = make(**params)
        assert repr(by_columns(det, records, cut)) == expected, len(cut)
        assert learned(det) == learned(per_record), len(cut)
    assert repr(make(**params).update(records)) == expected


def learned(det: Cadence) -> dict[str, object]:
    """The detector's state, its silence heap as the set of entries it is (not a layout)."""
    state = det.state_dict()["learned"]
    return {**state, "heap_": sorted(map(repr, state["heap_"]))}


def test_a_checkpoint_mid_stream_continues_identically() -> None:
    params = {"adopt_after_s": 1800.0}
    records = eventful_stream(11)
    half = len(records) // 2 + 3
    straight, table = make(**params), DeviceTable()
    by_columns(straight, records[:half], sizes(half, 500), table)
    restored = make(**params)
    restored.load_state(json.loads(json.dumps(straight.state_dict(), allow_nan=False)))
    assert restored.state_dict() == straight.state_dict()
    # The restored detector's table gives other slots: the state is kept by device.
    elsewhere = DeviceTable()
    elsewhere.slots([DeviceRef("lyon", "x", "lighting", f"pad-{i}") for i in range(5)])
    rest = records[half:]
    continued = by_columns(restored, rest, sizes(len(rest), 7), elsewhere)
    assert [t.evidence["condition"] for t in continued if t.firing] == ["flood", "flood"]
    assert repr(continued) == repr(by_columns(straight, rest, sizes(len(rest), 7), table))


def test_another_device_table_is_refused() -> None:
    det = make()
    det.update_columns(Columns.of(stream([CAM], T0, T0 + 60, 10), DeviceTable()))
    with pytest.raises(ValueError, match="device table"):
        det.update_columns(Columns.of(stream([CAM], T0 + 60, T0 + 120, 10), DeviceTable()))


def test_a_state_with_values_of_the_wrong_type_is_refused() -> None:
    det = make()
    det.update(stream([CAM, *LAMPS], T0, T0 + 600, 10))
    state = json.loads(json.dumps(det.state_dict()))
    fields = state["learned"]["devices_"]["$map"][0][1]["fields"]
    fields["bucket"] = "a lot"
    with pytest.raises(ValueError, match="wrong type"):
        make().load_state(state)


def test_a_forgotten_devices_slot_serves_a_new_device_as_new() -> None:
    # cam-1 is forgotten; cam-2, new, takes its slot: it must start learning from nothing,
    # exactly as if cam-1 had never been there.
    reused, fresh = make(), make()
    first = stream([CAM, *LAMPS], T0, T0 + 1800, 10)
    reused.update(first)
    reused.forget({CAM.device_id})
    fresh.update([r for r in first if r.device != CAM])
    later = stream(
        [CAM2, *LAMPS], T0 + 1800, T0 + 9000, 10, lambda d, t: d == CAM2 and t > T0 + 7000
    )
    assert repr(reused.update(later)) == repr(fresh.update(later))
    assert learned(reused)["devices_"] == learned(fresh)["devices_"]
    assert reused.interval(CAM2) == pytest.approx(10, rel=0.01)
