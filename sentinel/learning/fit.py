"""Fitting a candidate model and calibrating its threshold to a false-alert budget.

Windows are split by (device, hour) blocks: about 70 % fit the model, the other 30 % (never
seen by the fit, so their scores are honest) calibrate the threshold. Calibration replays the
detector's own hysteresis (`detectors.learned.hysteresis_step`) on each device's calibration
windows and keeps the lowest threshold whose raised alerts stay within
`budget_per_1000_device_hours` of those windows' device-hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.learned import Estimator, LearnedParams, count_raises
from sentinel.learning.dataset import Arrays

CALIBRATION_SHARE = 3  # in 10 (device, hour) blocks
MIN_CALIBRATION_WINDOWS = 50
LOF_MAX_FIT = 20_000  # LOF keeps its fit rows and scores by neighbours: cap them


def make_estimator(name: Estimator, seed: int) -> Any:
    """A scikit-learn pipeline: robust scaling, then the outlier model."""
    from sklearn.covariance import EllipticEnvelope  # type: ignore[import-untyped]  # noqa: PLC0415 - heavy import
    from sklearn.ensemble import IsolationForest  # type: ignore[import-untyped]  # noqa: PLC0415
    from sklearn.neighbors import LocalOutlierFactor  # type: ignore[import-untyped]  # noqa: PLC0415
    from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]  # noqa: PLC0415
    from sklearn.preprocessing import RobustScaler  # type: ignore[import-untyped]  # noqa: PLC0415

    model: Any
    if name == "isolation_forest":
        model = IsolationForest(n_estimators=200, random_state=seed)
    elif name == "lof":
        model = LocalOutlierFactor(n_neighbors=35, novelty=True)
    else:
        model = EllipticEnvelope(support_fraction=0.9, random_state=seed)
    return Pipeline([("scale", RobustScaler()), ("model", model)])


def calibration_mask(arrays: Arrays, window_s: int) -> npt.NDArray[np.bool_]:
    """Whole (device, hour) blocks, chosen by a fixed hash: the same split on every run."""
    hour = (arrays.start * window_s) // 3600
    mixed = (arrays.device * 1_000_003 + hour) * 2_654_435_761 % (1 << 32)
    return np.asarray(mixed % 10 < CALIBRATION_SHARE)


def raises_at(
    raw: npt.NDArray[np.float64],
    device: npt.NDArray[np.int64],
    threshold: float,
    params: LearnedParams,
) -> int:
    """Alerts the detector would raise on these windows (sorted by device, then time)."""
    flags = raw >= threshold
    cuts = np.flatnonzero(np.diff(device)) + 1
    runs = (f.tolist() for f in np.split(flags, cuts) if f.any())
    return count_raises(runs, params.raise_after, params.clear_after)


def calibrate(
    raw: npt.NDArray[np.float64],
    device: npt.NDArray[np.int64],
    window_s: int,
    params: LearnedParams,
) -> tuple[float, float]:
    """(threshold, achieved alerts per 1,000 device-hours) on these windows."""
    device_hours = len(raw) * window_s / 3600.0
    allowed = params.budget_per_1000_device_hours * device_hours / 1000.0
    candidates = np.unique(raw)
    # Above every score nothing is flagged; otherwise search the lowest threshold that fits.
    above = float(candidates[-1]) + max(1e-9, 1e-6 * abs(float(candidates[-1])))
    lo, hi = 0, len(candidates)  # index hi = "above"
    while lo < hi:
        mid = (lo + hi) // 2
        if raises_at(raw, device, float(candidates[mid]), params) <= allowed:
            hi = mid
        else:
            lo = mid + 1
    threshold = above if lo == len(candidates) else float(candidates[lo])
    if allowed < 1:  # the history is too short to show the budget's rate: extrapolate
        threshold = max(
            threshold, tail_threshold(raw, params.budget_per_1000_device_hours, window_s)
        )
    achieved = raises_at(raw, device, threshold, params) * 1000.0 / device_hours
    return threshold, achieved


def tail_threshold(raw: npt.NDArray[np.float64], budget: float, window_s: int) -> float:
    """The score one window in `1 / p` exceeds, p = the budget per window, extrapolated.

    A short history cannot show a rate below one per its length: past the empirical tail, the
    top scores' excesses are taken as exponential (peaks over threshold), so a small training
    set still gets a threshold for a tight budget instead of "just above the maximum".
    """
    n = len(raw)
    p = budget / 1000.0 * window_s / 3600.0
    k = max(10, n // 50)
    if n < 2 * k or p <= 0:
        return float(raw.max())
    top = np.sort(raw)[-k:]
    u = float(top[0])
    if p * n >= k:
        return u
    mean_excess = max(float(np.mean(top - u)), 1e-12)
    return u + mean_excess * math.log(k / (n * p))


@dataclass(frozen=True)
class Fitted:
    estimator: Any
    threshold: float
    scale: float
    achieved_per_1000_device_hours: float
    fit_windows: int
    calibration_windows: int
    calibration_device_hours: float
    profile: dict[str, list[float]]


def profile(features: npt.NDArray[np.float64]) -> dict[str, list[float]]:
    """Per feature: median, a robust spread, and the 0.5 / 99.5 % quantiles (explanations)."""
    q = np.quantile(features, [0.005, 0.25, 0.5, 0.75, 0.995], axis=0)
    floor = np.maximum(1e-3 * np.abs(q[2]), 1e-9)
    spread = np.maximum((q[3] - q[1]) / 1.349, floor)
    return {
        "center": q[2].tolist(),
        "spread": spread.tolist(),
        "low": q[0].tolist(),
        "high": q[4].tolist(),
    }


def fit(arrays: Arrays, params: LearnedParams, estimator: Estimator | None = None) -> Fitted:
    if len(arrays) < 2 * MIN_CALIBRATION_WINDOWS:
        raise ValueError(
            f"only {len(arrays)} scorable windows: need at least {2 * MIN_CALIBRATION_WINDOWS}"
        )
    cal = calibration_mask(arrays, params.window_s)
    if cal.sum() < MIN_CALIBRATION_WINDOWS or (~cal).sum() < MIN_CALIBRATION_WINDOWS:
        cal = np.arange(len(arrays)) % 10 < CALIBRATION_SHARE  # too few hours for blocks
    fit_rows = arrays.features[~cal]
    name = estimator or params.estimator
    if name == "lof" and len(fit_rows) > LOF_MAX_FIT:
        pick = np.random.default_rng(params.seed).choice(len(fit_rows), LOF_MAX_FIT, replace=False)
        fit_rows = fit_rows[np.sort(pick)]
    model = make_estimator(name, params.seed)
    model.fit(fit_rows)
    cal_set = arrays.subset(cal)
    raw = -np.asarray(model.score_samples(cal_set.features), dtype=np.float64)
    threshold, achieved = calibrate(raw, cal_set.device, params.window_s, params)
    q50, q99 = np.quantile(raw, [0.5, 0.99])
    scale = max(float(q99 - q50) / 4.0, 1e-6)
    return Fitted(
        estimator=model,
        threshold=threshold,
        scale=scale,
        achieved_per_1000_device_hours=achieved,
        fit_windows=len(fit_rows),
        calibration_windows=len(cal_set),
        calibration_device_hours=len(cal_set) * params.window_s / 3600.0,
        profile=profile(arrays.features[~cal]),
    )
