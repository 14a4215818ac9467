"""`sentinel train`: history from InfluxDB -> feature windows -> fitted, calibrated model version.

History is read with the backtest's chunked InfluxQL reader (`sentinel.backtest_source`), so
memory holds about one chunk per measurement, each device's open window, and at most
`max_training_windows` windows (a uniform sample beyond that).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from detectors.learned import (
    LearnedParams,
    LoadedModel,
    ModelError,
    Window,
    WindowBuilder,
    feature_names,
    fits,
    load_version,
    versions,
)
from detectors.model import Record
from sentinel.backtest_source import BacktestError, InfluxHistory, InfluxSource
from sentinel.config import Config, DetectorConfig
from sentinel.learning.dataset import Arrays, WindowSet
from sentinel.learning.fit import fit
from sentinel.learning.store import save_version


class TrainError(BacktestError):
    """Training cannot run or produced nothing usable."""


def learned_detector(cfg: Config, name: str) -> tuple[DetectorConfig, LearnedParams]:
    for det in cfg.detectors:
        if det.name == name:
            if det.type != "learned":
                raise TrainError(f"detector {name!r} is of type {det.type!r}, not 'learned'")
            params = det.parsed_params()
            assert isinstance(params, LearnedParams)
            return det, params
    known = ", ".join(d.name for d in cfg.detectors if d.type == "learned") or "none"
    raise TrainError(f"no detector named {name!r} in the configuration (learned ones: {known})")


def current_model(model_dir: Path, params: LearnedParams) -> LoadedModel | None:
    """The newest version that loads and fits the configuration (what an agent would use)."""
    for version in reversed(versions(model_dir)):
        try:
            model = load_version(model_dir, version)
        except ModelError:
            continue
        if fits(model.meta, params) is None:
            return model
    return None


@dataclass
class TrainResult:
    path: Path
    meta: dict[str, Any]
    excluded_flagged: int = 0
    skipped_rows: dict[str, int] = field(default_factory=dict)


def collect(records: Iterable[Record], builder: WindowBuilder, wset: WindowSet) -> None:
    for r in records:
        w = builder.add(r)
        if w is not None:
            wset.add(w)


def train_windows(
    arrays: Arrays,
    params: LearnedParams,
    out: Path,
    *,
    kinds: Iterable[str],
    since: float,
    until: float,
    sampled: bool = False,
    unscorable: int = 0,
    rows: int | None = None,
    now: datetime | None = None,
) -> TrainResult:
    """Fit, calibrate and save a version from windows (the part without InfluxDB)."""
    excluded = 0
    previous = current_model(out, params) if params.exclude_flagged else None
    if previous is not None and len(arrays):
        keep = previous.raw_scores(arrays.features) < previous.meta.threshold
        excluded = int((~keep).sum())
        arrays = arrays.subset(keep)
    try:
        fitted = fit(arrays, params)
    except ValueError as exc:
        raise TrainError(str(exc)) from None
    trained_at = now or datetime.now(UTC)
    meta: dict[str, Any] = {
        "trained_at": trained_at.isoformat(),
        "estimator": params.estimator,
        "kinds": sorted(kinds),
        "metrics": list(params.metrics),
        "window_s": params.window_s,
        "min_reports": params.min_reports,
        "features": list(feature_names(params.metrics)),
        "threshold": fitted.threshold,
        "scale": fitted.scale,
        **fitted.profile,
        "training": {
            "since": datetime.fromtimestamp(since, UTC).isoformat(),
            "until": datetime.fromtimestamp(until, UTC).isoformat(),
            "rows": rows,
            "windows": len(arrays),
            "devices": len(set(arrays.device.tolist())),
            "sampled": sampled,
            "unscorable_windows": unscorable,
            "excluded_flagged": excluded,
            "excluded_by": previous.version if previous is not None else None,
            "fit_windows": fitted.fit_windows,
        },
        "calibration": {
            "budget_per_1000_device_hours": params.budget_per_1000_device_hours,
            "achieved_per_1000_device_hours": fitted.achieved_per_1000_device_hours,
            "windows": fitted.calibration_windows,
            "device_hours": fitted.calibration_device_hours,
            "raise_after": params.raise_after,
            "clear_after": params.clear_after,
        },
    }
    path = save_version(out, fitted.estimator, meta, trained_at)
    return TrainResult(path, meta, excluded)


@dataclass(frozen=True)
class TrainRequest:
    config: Config
    detector: str
    since: float
    until: float
    out: Path | None = None
    tenant: str | None = None
    zone: str | None = None
    query_window_s: float = 3600.0
    chunk_size: int = 5000


def influx_source(cfg: Config, req: TrainRequest) -> InfluxSource:
    ic = cfg.influxdb
    return InfluxSource(
        url=ic.url,
        database=ic.database,
        username=ic.username,
        password=ic.secret(),
        timeout_s=max(ic.timeout_s, 30.0),
        tenant=req.tenant,
        zone=req.zone,
    )


async def run_train(
    req: TrainRequest, progress: Callable[[float], None] | None = None
) -> TrainResult:
    if not req.since < req.until:
        raise TrainError("--since must be before --until")
    det, params = learned_detector(req.config, req.detector)
    out = req.out or Path(params.model_dir)
    builder = WindowBuilder(params.metrics, params.window_s, params.min_reports)
    wset = WindowSet(params.max_training_windows, params.seed)
    since_ms, until_ms = round(req.since * 1000), round(req.until * 1000)
    async with aiohttp.ClientSession() as session:
        history = InfluxHistory(
            session,
            influx_source(req.config, req),
            det.kinds,
            chunk_size=req.chunk_size,
            max_metrics=req.config.validation.max_metrics,
        )
        async for end, batch in history.records(
            since_ms, until_ms, max(1, round(req.query_window_s * 1000))
        ):
            collect(batch, builder, wset)
            if progress is not None:
                progress((end - since_ms) / (until_ms - since_ms))
    closing: list[Window] = builder.flush()
    wset.extend(closing)
    if wset.seen == 0:
        raise TrainError(
            f"no scorable window of {', '.join(params.metrics)} for kinds "
            f"{', '.join(det.kinds)} between --since and --until ({history.stats.rows:,} rows read)"
        )
    result = train_windows(
        wset.arrays(),
        params,
        out,
        kinds=det.kinds,
        since=req.since,
        until=req.until,
        sampled=wset.sampled,
        unscorable=wset.unscorable,
        rows=history.stats.rows,
    )
    result.skipped_rows = dict(history.stats.skipped)
    return result


def summary(result: TrainResult) -> str:
    m = result.meta
    t, c = m["training"], m["calibration"]
    return (
        f"model {result.path.name} ({m['estimator']}) written to {result.path}\n"
        f"  {t['windows']:,} windows of {t['devices']:,} devices"
        + (" (sampled)" if t["sampled"] else "")
        + (
            f", {t['excluded_flagged']:,} flagged by {t['excluded_by']} left out"
            if t["excluded_flagged"]
            else ""
        )
        + f"\n  threshold {m['threshold']:.6g}: {c['achieved_per_1000_device_hours']:.3g} alerts"
        f" per 1,000 device-hours on {c['device_hours']:,.0f} held-out device-hours"
        f" (budget {c['budget_per_1000_device_hours']:g})"
    )
