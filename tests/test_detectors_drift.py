"""peer_drift: a device against the median of its zone's peers (jump and slope)."""

from __future__ import annotations

import statistics
from array import array

import numpy as np
import pytest

from detectors import registry
from detectors import state as state_codec
from detectors.base import Detector
from detectors.drift import _Peers
from detectors.model import DeviceRef, Record, Transition

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
