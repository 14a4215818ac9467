"""Per device group tuning: one detector type, configured per zone."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from detectors.columns import Reports
from detectors.model import DeviceRef, Record
from sentinel.config import Config
from sentinel.engine import Engine, build_instances


def rule(name: str, value: float, **group: list[str]) -> dict[str, object]:
    return {
        "name": name,
        "type": "threshold",
        "kinds": ["video"],
        **group,
        "params": {"metric": "upload_kbps", "op": ">", "value": value, "raise_after": 1},
    }


def test_each_group_gets_its_own_parameters() -> None:
    cfg = Config(
        detectors=[
            rule("upload-stadium", 40_000, zones=["gerland"]),  # big uploads on match nights
            rule("upload-elsewhere", 15_000, tenants=["lyon"], zones=["vaise", "presquile"]),
        ]
    )
    engine = Engine(build_instances(cfg.detectors))
    records = [
        Record(DeviceRef("lyon", zone, "video", f"cam-{zone}"), 1.0, {"upload_kbps": 20_000})
        for zone in ("gerland", "vaise", "presquile", "croix-rousse")
    ]
    fired = {(source.name, t.device.zone) for source, ts in engine.process(records) for t in ts}
    assert fired == {("upload-elsewhere", "vaise"), ("upload-elsewhere", "presquile")}


def test_columns_route_rows_by_kind_as_records_do() -> None:
    cfg = Config(detectors=[rule("upload", 15_000)])
    by_records, by_columns = (Engine(build_instances(cfg.detectors)) for _ in range(2))
    records = [
        Record(DeviceRef("lyon", "vaise", kind, f"{kind}-{i}"), float(i), {"upload_kbps": 20_000})
        for i, kind in enumerate(["video", "lighting", "video", "mobility", "video"])
    ]
    columns = by_columns.columns_of(Reports.of_records(records))
    fired = by_columns.process_columns(columns)
    assert fired == by_records.process(records)
    assert [t.device.device_id for _, ts in fired for t in ts] == ["video-0", "video-2", "video-4"]
    with pytest.raises(ValueError, match="another engine"):
        by_records.process_columns(columns)


def test_a_group_must_be_made_of_topic_slugs() -> None:
    with pytest.raises(ValidationError, match="zones"):
        Config(detectors=[rule("r", 1, zones=["Part Dieu"])])


def test_score_samples_are_held_for_one_batch_only() -> None:
    """Callers that never take them (backtest) must not accumulate them."""
    cfg = Config(
        detectors=[
            {"name": "s", "type": "seasonal", "kinds": ["video"], "params": {"metrics": ["fps"]}}
        ]
    )
    engine = Engine(build_instances(cfg.detectors))
    for batch in range(3):
        devices = [DeviceRef("lyon", "gerland", "video", f"cam-{i}") for i in range(10)]
        engine.process([Record(d, 60.0 * batch, {"fps": 25.0}) for d in devices])
    assert len(engine.take_scores()) == 10


def test_a_group_by_model_follows_the_model_each_device_reported() -> None:
    """`models` selects devices by their telemetry's `info.model`; a device's later reports
    without `info` keep the model it last reported."""
    cfg = Config(detectors=[rule("upload-old-cameras", 15_000, models=["CAM-2MP-A"])])
    engine = Engine(build_instances(cfg.detectors))
    old, new = (DeviceRef("lyon", "gerland", "video", f"cam-{m}") for m in ("old", "new"))
    first = [
        Record(old, 1.0, {"upload_kbps": 1_000}, info={"model": "CAM-2MP-A"}),
        Record(new, 1.0, {"upload_kbps": 1_000}, info={"model": "CAM-4K-B"}),
    ]
    assert engine.process(first) == []
    surge = [Record(dev, 2.0, {"upload_kbps": 20_000}) for dev in (old, new)]  # no info
    fired = [t.device for _, ts in engine.process(surge) for t in ts]
    assert fired == [old]
    engine.forget({"cam-old"})
    assert engine.process([Record(old, 3.0, {"upload_kbps": 20_000})]) == []  # model unknown
