from __future__ import annotations

from collections.abc import Sequence

import pytest

from detectors import registry
from detectors.model import DeviceRef, Record
from detectors.threshold import ThresholdParams, ThresholdRule

CAM = DeviceRef("lyon", "gerland", "video", "cam-1")
OTHER = DeviceRef("lyon", "gerland", "video", "cam-2")


def rule(**kw: object) -> ThresholdRule:
    params = {"metric": "upload_kbps", "op": ">", "value": 100.0, **kw}
    return ThresholdRule(ThresholdParams.model_validate(params))


def feed(
    r: ThresholdRule, values: Sequence[float], device: DeviceRef = CAM
) -> list[tuple[int, bool]]:
    out = []
    for i, v in enumerate(values):
        for t in r.update([Record(device, float(i), {"upload_kbps": v})]):
            out.append((i, t.firing))
    return out


def test_raises_after_n_and_clears_after_m() -> None:
    r = rule(raise_after=3, clear_after=2)
    values = [50, 150, 150, 50, 150, 150, 150, 200, 90, 150, 90, 90, 90]
    assert feed(r, values) == [(6, True), (11, False)]


def test_single_point_defaults_and_other_comparisons() -> None:
    assert feed(rule(), [101, 99]) == [(0, True), (1, False)]
    assert feed(rule(op="<", value=10), [11, 9, 12]) == [(1, True), (2, False)]
    assert feed(rule(op=">=", value=100), [100]) == [(0, True)]


def test_devices_are_independent_and_evidence_explains() -> None:
    r = rule(raise_after=2)
    batch = [
        Record(CAM, 1.0, {"upload_kbps": 500.0}),
        Record(OTHER, 1.0, {"upload_kbps": 500.0}),
        Record(CAM, 2.0, {"upload_kbps": 900.0}),
        Record(OTHER, 2.0, {"upload_kbps": 1.0}),
    ]
    changes = r.update(batch)
    assert [(t.device, t.firing) for t in changes] == [(CAM, True)]
    ev = changes[0].evidence
    assert ev["value"] == 900.0
    assert ev["condition"] == "upload_kbps > 100"
    assert changes[0].ts == 2.0


def test_quiet_devices_hold_no_state_and_forget_drops_state() -> None:
    r = rule(raise_after=5)
    feed(r, [1, 2, 3])
    assert r.tracked_devices() == 0
    feed(r, [500])
    assert r.tracked_devices() == 1
    r.forget({"cam-1"})
    assert r.tracked_devices() == 0


def test_records_without_the_metric_are_ignored() -> None:
    r = rule()
    assert r.update([Record(CAM, 1.0, {"fps": 25.0})]) == []


def test_registry_validates_params_and_rejects_duplicates() -> None:
    assert registry.get("threshold") is ThresholdRule
    with pytest.raises(Exception, match="raise_after"):
        registry.parse_params("threshold", {"metric": "x", "op": ">", "value": 1, "raise_after": 0})
    with pytest.raises(ValueError, match="already registered"):
        registry.register("threshold")(ThresholdRule)
    with pytest.raises(ValueError, match="unknown detector type"):
        registry.get("nope")
