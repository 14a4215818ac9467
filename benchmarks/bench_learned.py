"""Which model for the learned detector: candidates compared on simulated attacks with known truth.

    .venv/bin/python benchmarks/bench_learned.py [--devices 150] [--train-days 3] [--seed 0]
        [--scenario video-exfiltration --scenario camera-upload-surge] [--budget 1.0]

For each scenario: the same fleet's normal traffic over `--train-days` before the scenario
(simulator, no events) is decoded by the agent's decoder, cut into the detector's feature
windows (`detectors.learned.WindowBuilder`), and each candidate is fitted and calibrated exactly
as `sentinel train` does (`sentinel.learning.fit.fit`). Then the scenario's day is scored. A
window is positive when its device is a target of an attack event that overlaps it.

Printed per candidate: window AUC, window precision and recall at the calibrated threshold,
alerts raised by the detector's hysteresis (true = raised on a positive window), false alerts per
1,000 device-hours of the scenario day, and fit and scoring times (same run, side by side).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import numpy as np
from sklearn.metrics import roc_auc_score  # type: ignore[import-untyped]

from detectors.learned import (
    DeviceState,
    Estimator,
    LearnedParams,
    Window,
    WindowBuilder,
    hysteresis_step,
)
from detectors.model import Record
from sentinel.agent import build_decoder
from sentinel.config import Config
from sentinel.learning.dataset import WindowSet
from sentinel.learning.fit import fit
from simulators.generator import generate
from simulators.messages import Message
from simulators.scenario import load_scenario
from simulators.scenario_run import prepare

CANDIDATES: tuple[Estimator, ...] = ("isolation_forest", "lof", "robust_covariance")
VIDEO_METRICS = (
    "upload_kbps",
    "bitrate_kbps",
    "fps",
    "net_bytes_out",
    "net_pkts_out",
    "net_conns",
    "net_dst_ips",
)


def records(messages: Iterator[Message], kind: str) -> Iterator[Record]:
    decoder = build_decoder(Config())
    marker = f"/{kind}/"
    for m in messages:
        if marker in m.topic and m.topic.endswith("/telemetry"):
            r = decoder.decode(m.topic, m.payload, m.ts)
            if isinstance(r, Record):
                yield r


def windows_of(recs: Iterator[Record], params: LearnedParams) -> list[Window]:
    b = WindowBuilder(params.metrics, params.window_s, params.min_reports)
    out = [w for r in recs if (w := b.add(r)) is not None]
    return out + b.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=150)
    ap.add_argument("--train-days", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenario", action="append")
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--window-s", type=int, default=300)
    args = ap.parse_args()
    for name in args.scenario or ["video-exfiltration", "camera-upload-surge"]:
        run_one(name, args)


def run_one(name: str, args: argparse.Namespace) -> None:
    run = prepare(load_scenario(name), devices=args.devices, seed=args.seed)
    train_msgs = generate(
        run.fleet, run.start - args.train_days * 86_400, run.start, None, run.seed + 1
    )
    began = time.perf_counter()
    base = LearnedParams(
        metrics=VIDEO_METRICS,
        model_dir="-",
        window_s=args.window_s,
        budget_per_1000_device_hours=args.budget,
        seed=args.seed,
    )
    wset = WindowSet(base.max_training_windows, base.seed)
    wset.extend(windows_of(records(train_msgs, "video"), base))
    train = wset.arrays()
    test = [w for w in windows_of(records(run.messages(), "video"), base) if w.features]
    prep_s = time.perf_counter() - began
    attacks = [t for t in run.truth if t.label == "attack"]

    def positive(w: Window) -> bool:
        lo, hi = w.start * base.window_s, (w.start + 1) * base.window_s
        return any(w.device.device_id in t.devices and lo < t.end and hi > t.start for t in attacks)

    labels = np.array([positive(w) for w in test])
    x_test = np.array([w.features for w in test], dtype=np.float64)
    device_hours = len(test) * base.window_s / 3600.0
    print(
        f"\n{name}: {len(run.fleet)} devices, {len(set(train.device.tolist()))} cameras; "
        f"train {len(train):,} windows ({args.train_days:g} days), test {len(test):,} windows "
        f"({labels.sum()} positive), {device_hours:,.0f} device-hours; "
        f"data prepared in {prep_s:.1f} s"
    )
    print(
        f"{'candidate':18} {'AUC':>6} {'prec':>6} {'recall':>6} {'alerts':>7} {'true':>5} "
        f"{'false/1000dh':>12} {'fit s':>7} {'score µs/win':>12}"
    )
    for est in CANDIDATES:
        params = base.model_copy(update={"estimator": est})
        t0 = time.perf_counter()
        fitted = fit(train, params)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        raw = -np.asarray(fitted.estimator.score_samples(x_test), dtype=np.float64)
        score_us = (time.perf_counter() - t0) / len(test) * 1e6
        auc = roc_auc_score(labels, raw)
        flagged = raw >= fitted.threshold
        tp = int((flagged & labels).sum())
        prec = tp / max(int(flagged.sum()), 1)
        rec = tp / max(int(labels.sum()), 1)
        devs: dict[object, DeviceState] = {}
        true_alerts = false_alerts = 0
        for w, f, lab in zip(test, flagged.tolist(), labels.tolist(), strict=True):
            dev = devs.setdefault(w.device, DeviceState(0))
            if hysteresis_step(dev, f, params.raise_after, params.clear_after) == "raise":
                true_alerts += lab
                false_alerts += not lab
        print(
            f"{est:18} {auc:6.3f} {prec:6.3f} {rec:6.3f} {true_alerts + false_alerts:7d} "
            f"{true_alerts:5d} {false_alerts * 1000 / device_hours:12.2f} {fit_s:7.2f} "
            f"{score_us:12.1f}"
        )


if __name__ == "__main__":
    main()
