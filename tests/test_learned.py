"""The learned detector: feature windows, calibration, model files, version swaps."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio  # type: ignore[import-untyped]

from detectors import registry
from detectors.learned import (
    META_FILE,
    MODEL_FILE,
    LearnedDetector,
    ModelError,
    WindowBuilder,
    WindowVerdict,
    feature_names,
    load_version,
)
from detectors.model import DeviceRef, Record
from sentinel.learning.fit import make_estimator
from tests.test_learned_example import METRICS, T0, camera_fleet, params, train_on

DEV = DeviceRef("lyon", "gerland", "video", "cam-x")


def rec(ts: float, **metrics: float) -> Record:
    return Record(DEV, ts, dict(metrics))


# -- feature windows ------------------------------------------------------------------------


def test_windows_aggregate_each_metric_and_close_on_the_next_window() -> None:
    b = WindowBuilder(METRICS, 300)
    assert b.add(rec(T0 + 10, upload_kbps=100.0, fps=25.0)) is None
    assert b.add(rec(T0 + 20, upload_kbps=300.0)) is None  # fps missing here: fine
    assert b.add(rec(T0 + 299, upload_kbps=200.0, fps=23.0, other=1.0)) is None
    closed = b.add(rec(T0 + 300, upload_kbps=1.0, fps=1.0))
    assert closed is not None
    assert closed.device == DEV
    assert closed.start == T0 // 300
    assert closed.last_ts == T0 + 299
    f = dict(zip(feature_names(METRICS), closed.features or [], strict=True))
    assert f["upload_kbps_mean"] == pytest.approx(200.0)
    assert f["upload_kbps_min"] == 100.0
    assert f["upload_kbps_max"] == 300.0
    assert f["upload_kbps_std"] == pytest.approx(math.sqrt(20000 / 3))
    assert f["fps_mean"] == pytest.approx(24.0)
    assert f["fps_std"] == pytest.approx(1.0)
    assert f["reports"] == 3.0


def test_window_without_a_metric_or_with_too_few_reports_is_not_scorable() -> None:
    b = WindowBuilder(METRICS, 300, min_reports=2)
    b.add(rec(T0, upload_kbps=1.0))
    b.add(rec(T0 + 1, upload_kbps=2.0))
    closed = b.add(rec(T0 + 300, upload_kbps=1.0, fps=1.0))
    assert closed is not None
    assert closed.features is None
    closed = b.add(rec(T0 + 600, upload_kbps=1.0, fps=1.0))
    assert closed is not None
    assert closed.features is None
    assert b.add(rec(T0 + 10, upload_kbps=5.0, fps=5.0)) is None  # late: dropped, counted
    assert b.late == 1
    assert b.add(rec(T0 + 700, nothing=1.0)) is None  # no configured metric: ignored
    assert b.add(rec(T0 + 700, upload_kbps=float("nan"), fps=float("inf"))) is None


# -- training, calibration, detection ---------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model (the default estimator) from two days of 30 normal cameras."""
    out = tmp_path_factory.mktemp("models")
    train_on(camera_fleet(30, 48, seed=1), params(out, budget_per_1000_device_hours=5.0), out)
    return out


def only_version(model_dir: Path) -> str:
    (version,) = [p.name for p in model_dir.iterdir() if p.name.startswith("v")]
    return version


def test_saved_version_holds_skops_model_and_metadata(trained: Path) -> None:
    folder = trained / only_version(trained)
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["version"] == folder.name
    assert meta["estimator"] == "lof"
    assert meta["features"] == list(feature_names(METRICS))
    assert meta["sha256"] == hashlib.sha256((folder / MODEL_FILE).read_bytes()).hexdigest()
    assert meta["training"]["windows"] == 30 * 48 * 12
    assert {"scikit-learn", "skops", "numpy"} <= set(meta["libraries"])
    cal = meta["calibration"]
    assert cal["achieved_per_1000_device_hours"] <= cal["budget_per_1000_device_hours"] == 5.0
    assert not list(folder.parent.glob(".tmp-*"))  # written under a dot-name, renamed


def run_detector(det: LearnedDetector, records: list[Record]) -> list[WindowVerdict]:
    out: list[WindowVerdict] = []
    for i in range(0, len(records), 500):
        out += [v for v in det.decide(records[i : i + 500]) if isinstance(v, WindowVerdict)]
    return out


def test_calibration_meets_the_budget_on_held_out_normal_data(trained: Path) -> None:
    det = LearnedDetector(params(trained))
    held_out = camera_fleet(30, 72, seed=99, start=T0 + 2 * 86_400)  # three later days
    verdicts = run_detector(det, held_out)
    device_hours = len(verdicts) * 300 / 3600
    assert device_hours > 2000
    raises = sum(v.change == "raise" for v in verdicts)
    assert raises * 1000 / device_hours <= 5.0


def test_an_anomalous_window_is_flagged_with_evidence(trained: Path) -> None:
    det = LearnedDetector(params(trained))
    normal = camera_fleet(5, 6, seed=7, start=T0 + 5 * 86_400)
    victim = normal[0].device
    attack_from, attack_to = normal[0].ts + 3 * 3600, normal[0].ts + 3 * 3600 + 600
    stream = [
        replace(r, metrics={**r.metrics, "upload_kbps": r.metrics["upload_kbps"] * 2.5})
        if r.device == victim and attack_from <= r.ts < attack_to
        else r
        for r in normal
    ]
    verdicts = run_detector(det, stream)
    raised = [v for v in verdicts if v.change == "raise"]
    assert [(v.device, attack_from <= v.ts < attack_to + 300) for v in raised] == [(victim, True)]
    ev = raised[0].transition().evidence
    assert ev["model_version"] == only_version(trained)
    assert det.model is not None
    assert float(ev["score"] or 0) >= 0.5
    assert ev["threshold"] == det.model.meta.threshold
    assert str(ev["metric"]).startswith("upload_kbps")
    assert float(ev["f_upload_kbps_mean"] or 0) > float(ev["expected_high"] or 0)
    assert {f"f_{n}" for n in feature_names(METRICS)} <= set(ev)
    assert any(v.change == "clear" and v.device == victim for v in verdicts)


def test_state_round_trips_as_json_and_forget_drops_devices(trained: Path) -> None:
    records = camera_fleet(4, 2, seed=3)
    a = LearnedDetector(params(trained))
    run_detector(a, records[: len(records) // 2])
    b = LearnedDetector(params(trained))
    b.load_state(json.loads(json.dumps(a.state_dict(), allow_nan=False)))
    rest = records[len(records) // 2 :]
    assert np.array_equal(a.score(rest[:40]), b.score(rest[:40]), equal_nan=True)
    assert run_detector(a, rest) == run_detector(b, rest)
    a.forget({"cam-000", "cam-001"})
    assert a.tracked_devices() == 2


# -- model files: allow-list and version swaps ------------------------------------------------


class Sneaky:
    """A type no allow-list names: skops would rebuild it by calling its code."""

    built = 0

    def __setstate__(self, state: dict[str, object]) -> None:
        Sneaky.built += 1
        self.__dict__.update(state)

    def score_samples(self, x: object) -> object:
        return x


def copy_version(src: Path, dst_dir: Path, name: str) -> Path:
    dst = dst_dir / name
    shutil.copytree(src, dst)
    meta = json.loads((dst / META_FILE).read_text())
    meta["version"] = name
    (dst / META_FILE).write_text(json.dumps(meta))
    return dst


def put_model(folder: Path, estimator: object) -> None:
    sio.dump(estimator, folder / MODEL_FILE)
    meta = json.loads((folder / META_FILE).read_text())
    meta["sha256"] = hashlib.sha256((folder / MODEL_FILE).read_bytes()).hexdigest()
    (folder / META_FILE).write_text(json.dumps(meta))


def test_a_file_with_a_type_outside_the_allow_list_is_refused(
    trained: Path, tmp_path: Path
) -> None:
    folder = copy_version(trained / only_version(trained), tmp_path, "v20300101T000000Z")
    pipe = make_estimator("isolation_forest", 0)
    pipe.steps.append(("extra", Sneaky()))
    put_model(folder, pipe)
    with pytest.raises(ModelError, match=r"allow-list: .*Sneaky"):
        load_version(tmp_path, folder.name)
    assert Sneaky.built == 0  # refused before anything of it was built


def test_a_bad_newer_version_is_skipped_and_the_old_model_kept(
    trained: Path, tmp_path: Path
) -> None:
    good = only_version(trained)
    shutil.copytree(trained / good, tmp_path / good)
    det = LearnedDetector(params(tmp_path, reload_every_s=600))
    det.check_model(T0)
    assert det.model is not None
    assert det.model.version == good
    # Three newer versions, each unusable in its own way.
    corrupt = copy_version(tmp_path / good, tmp_path, "v20300101T000000Z")
    (corrupt / MODEL_FILE).write_bytes(b"not a zip file")
    untrusted = copy_version(tmp_path / good, tmp_path, "v20300102T000000Z")
    pipe = make_estimator("isolation_forest", 0)
    pipe.steps.append(("extra", Sneaky()))
    put_model(untrusted, pipe)
    other = copy_version(tmp_path / good, tmp_path, "v20300103T000000Z")
    meta = json.loads((other / META_FILE).read_text())
    meta["window_s"] = 60
    (other / META_FILE).write_text(json.dumps(meta))
    det.check_model(T0 + 60)  # not yet time to look
    assert det.skipped == {}
    det.check_model(T0 + 600)
    assert det.model.version == good
    assert set(det.skipped) == {corrupt.name, untrusted.name, other.name}
    assert "sha256" in det.skipped[corrupt.name]
    assert "allow-list" in det.skipped[untrusted.name]
    assert "60 s windows" in det.skipped[other.name]
    # It still scores with the old model; a good newer version is then swapped in.
    assert run_detector(det, camera_fleet(2, 1, seed=4, start=T0 + 700))
    newest = copy_version(tmp_path / good, tmp_path, "v20300104T000000Z")
    det.check_model(T0 + 4000)
    assert det.model.version == newest.name


def test_without_any_model_nothing_is_scored(tmp_path: Path) -> None:
    det = LearnedDetector(params(tmp_path / "empty"))
    records = camera_fleet(2, 1, seed=4)
    assert det.decide(records) == []
    assert np.isnan(det.score(records[:10])).all()


def test_retraining_leaves_out_what_the_current_model_flags(trained: Path, tmp_path: Path) -> None:
    good = only_version(trained)
    shutil.copytree(trained / good, tmp_path / good)
    records = camera_fleet(10, 24, seed=11, start=T0 + 10 * 86_400)
    victim = records[0].device
    poisoned = [
        replace(r, metrics={**r.metrics, "upload_kbps": r.metrics["upload_kbps"] * 3})
        if r.device == victim and r.ts < records[0].ts + 7200
        else r
        for r in records
    ]
    p = params(tmp_path, estimator="isolation_forest", budget_per_1000_device_hours=5.0)
    result = train_on(poisoned, p, tmp_path)
    assert result.meta["training"]["excluded_by"] == good
    assert 20 <= result.meta["training"]["excluded_flagged"] <= 40  # the 24 attack windows
    assert load_version(tmp_path, result.path.name).meta.metrics == METRICS


def test_registered_and_configured_by_name(trained: Path) -> None:
    det = registry.create(
        "learned",
        registry.parse_params("learned", {"metrics": list(METRICS), "model_dir": str(trained)}),
    )
    assert isinstance(det, LearnedDetector)
    with pytest.raises(ValueError, match="metrics"):
        registry.parse_params("learned", {"metrics": ["Bad Name"], "model_dir": "x"})
