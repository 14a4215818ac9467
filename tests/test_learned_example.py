"""A synthetic camera fleet and trained model versions for the learned detector's tests.

Helpers only (no tests): tests/test_learned.py, tests/test_learned_stack.py and the conformance
suite's `learned` example use them.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from detectors.learned import LearnedParams, WindowBuilder
from detectors.model import DeviceRef, Record
from sentinel.learning.dataset import WindowSet
from sentinel.learning.train import TrainResult, train_windows

METRICS = ("upload_kbps", "fps")
T0 = 1_700_000_400.0  # a multiple of 300: windows start on it
STEP = 60.0  # one report a minute: five per 5-minute window


def camera_fleet(
    devices: int, hours: float, seed: int, start: float = T0, tenant: str = "lyon"
) -> list[Record]:
    """Cameras whose upload follows the day around a per-camera level, with noise."""
    rng = np.random.default_rng(seed)
    levels = 1500 + 1000 * np.random.default_rng(0).random(devices)  # the same fleet per seed
    refs = [DeviceRef(tenant, "gerland", "video", f"cam-{i:03d}") for i in range(devices)]
    out: list[Record] = []
    for k in range(int(hours * 3600 / STEP)):
        ts = start + k * STEP
        daily = 1 + 0.3 * np.sin(2 * np.pi * ts / 86_400)
        noise = rng.normal(0, 0.03, devices)
        fps = 25 + rng.normal(0, 0.3, devices)
        for i, ref in enumerate(refs):
            up = float(levels[i] * daily * (1 + noise[i]))
            out.append(Record(ref, ts + 0.1 * i, {"upload_kbps": up, "fps": float(fps[i])}))
    return out


def params(model_dir: Path | str, **extra: Any) -> LearnedParams:
    return LearnedParams(metrics=METRICS, model_dir=str(model_dir), **extra)


def train_on(records: list[Record], p: LearnedParams, out: Path) -> TrainResult:
    """What `sentinel train` does after reading InfluxDB: windows, fit, calibrate, save."""
    builder = WindowBuilder(p.metrics, p.window_s, p.min_reports)
    wset = WindowSet(p.max_training_windows, p.seed)
    for r in records:
        w = builder.add(r)
        if w is not None:
            wset.add(w)
    wset.extend(builder.flush())
    return train_windows(
        wset.arrays(),
        p,
        out,
        kinds=["video"],
        since=records[0].ts,
        until=records[-1].ts,
        sampled=wset.sampled,
    )


@functools.cache
def example_model_dir() -> str:
    """A model folder for the conformance suite's fleet (upload_kbps around 200, fps 25).

    Trained once per process on the suite's own normal shape: one report per 5 minutes.
    """
    out = Path(tempfile.mkdtemp(prefix="sentinel-learned-example-"))
    rng = np.random.default_rng(5)
    refs = [DeviceRef("lyon", "gerland", "video", f"cam-{i}") for i in range(3)]
    records = []
    for i in range(3000):
        ts = 1_690_000_000.0 + i * 300.0
        daily = 1 + 0.5 * np.sin(2 * np.pi * ts / 86_400)
        for ref in refs:
            metrics = {
                "upload_kbps": float(200 * daily + rng.normal(0, 10)),
                "fps": float(25 + rng.normal(0, 0.5)),
            }
            records.append(Record(ref, ts, metrics))
    p = LearnedParams(
        metrics=("upload_kbps", "fps"),
        model_dir=str(out),
        budget_per_1000_device_hours=20.0,
    )
    train_on(records, p, out)
    return str(out)
