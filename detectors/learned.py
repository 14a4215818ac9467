"""Learned multivariate detector: per-device feature windows scored by a fitted scikit-learn model.

Feature windows (`WindowBuilder`, shared with `sentinel train`, so the model sees in production
exactly what it was trained on): each device's reports are cut into `window_s`-wide windows
aligned on multiples of `window_s` since the epoch (device time). A window's features are, for
every configured metric, the mean, min, max and standard deviation of its values, plus the
number of reports. A window closes when a report of a later window arrives; it is scored only
if every metric was seen in it and it holds at least `min_reports` reports. Reports older than
the device's open window (late, out of order) are dropped.

The model is not detector state: it is a versioned directory under `model_dir` (written by
`sentinel train`, see docs/learning.md), a skops file loaded against an explicit allow-list of
types, plus a metadata JSON (features, calibrated threshold, training window, ...). Every
`reload_every_s` of stream time the detector looks for a newer version and swaps to it; a
broken or untrusted version is skipped with a logged reason and the current model stays.

Score: `raw = -score_samples(features)` (higher = more anomalous), mapped to [0, 1] by a
logistic curve that puts the calibrated threshold at 0.5. A window at or above the threshold is
flagged; `raise_after` flagged windows in a row raise, `clear_after` unflagged ones clear. The
model never learns online, so flagged windows cannot poison it; `sentinel train` also drops the
windows the current model flags from the next model's training set.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import structlog
from pydantic import Field, field_validator

from detectors import state as state_codec
from detectors.base import (
    Change,
    DetectorParams,
    Scores,
    ScoringDetector,
    Verdict,
    check_metric_names,
)
from detectors.model import DeviceRef, EvidenceValue, Record
from detectors.registry import register

log = structlog.get_logger(__name__)

STATS = ("mean", "min", "max", "std")
REPORTS = "reports"
MODEL_FILE = "model.skops"
META_FILE = "meta.json"
META_FORMAT = 1
_VERSION = re.compile(r"^v\d{8}T\d{6}Z(-\d{1,3})?$")
_MAX_SKIPPED = 64
Estimator = Literal["isolation_forest", "lof", "robust_covariance"]

# Every type a model written by `sentinel train` may contain, beyond what skops trusts by
# default. A file needing any other type is refused: loading it could run arbitrary code.
TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "sklearn.tree._tree.Tree",  # IsolationForest's trees
        "sklearn.neighbors._kd_tree.KDTree",  # LocalOutlierFactor's neighbour index
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
    }
)


class ModelError(ValueError):
    """A model version cannot be used (missing, corrupt, untrusted or for other features)."""


class LearnedParams(DetectorParams):
    metrics: tuple[str, ...] = Field(min_length=1, max_length=16)
    # Versions live in subfolders; relative to the working directory (as for `sentinel run`).
    model_dir: str = Field(min_length=1)
    window_s: int = Field(default=300, ge=10, le=86_400)
    min_reports: int = Field(default=1, ge=1)
    raise_after: int = Field(default=1, ge=1, le=100)
    clear_after: int = Field(default=2, ge=1, le=100)
    reload_every_s: float = Field(default=900.0, gt=0)  # stream time between version checks
    # Training (`sentinel train`), kept with the detector so one table describes the model.
    estimator: Estimator = "lof"  # measured best: benchmarks/bench_learned.py
    budget_per_1000_device_hours: float = Field(default=1.0, ge=0)
    max_training_windows: int = Field(default=100_000, ge=100, le=5_000_000)
    exclude_flagged: bool = True
    seed: int = 0

    @field_validator("metrics")
    @classmethod
    def _metric_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_metric_names(v)


def feature_names(metrics: Sequence[str]) -> tuple[str, ...]:
    return (*(f"{m}_{s}" for m in metrics for s in STATS), REPORTS)


# -- feature windows (one implementation, for the detector and for training) --------------


class DeviceState:
    """One device's open window (Welford sums per metric) and its alert hysteresis."""

    __slots__ = (
        "clear_run",
        "cnt",
        "firing",
        "flag_run",
        "hi",
        "last_ts",
        "lo",
        "m2",
        "mean",
        "n",
        "start",
    )

    def __init__(self, k: int, start: int = 0) -> None:
        self.start = start  # window index: floor(ts / window_s)
        self.n = 0
        self.last_ts = 0.0
        self.cnt = [0] * k
        self.mean = [0.0] * k
        self.m2 = [0.0] * k
        self.lo = [0.0] * k
        self.hi = [0.0] * k
        self.firing = False
        self.flag_run = 0
        self.clear_run = 0

    def reset(self, start: int) -> None:
        k = len(self.cnt)
        self.start, self.n = start, 0
        self.cnt, self.mean, self.m2 = [0] * k, [0.0] * k, [0.0] * k
        self.lo, self.hi = [0.0] * k, [0.0] * k

    def add(self, ts: float, values: Sequence[float | None]) -> None:
        self.n += 1
        self.last_ts = ts
        for i, x in enumerate(values):
            if x is None:
                continue
            c = self.cnt[i] + 1
            self.cnt[i] = c
            if c == 1:
                self.mean[i], self.m2[i], self.lo[i], self.hi[i] = x, 0.0, x, x
                continue
            d = x - self.mean[i]
            self.mean[i] += d / c
            self.m2[i] += d * (x - self.mean[i])
            self.lo[i] = min(self.lo[i], x)
            self.hi[i] = max(self.hi[i], x)

    def features(self, min_reports: int) -> list[float] | None:
        """The window's feature row, or None when it cannot be scored."""
        if self.n < min_reports or 0 in self.cnt:
            return None
        row: list[float] = []
        for i, c in enumerate(self.cnt):
            row += [self.mean[i], self.lo[i], self.hi[i], math.sqrt(max(self.m2[i], 0.0) / c)]
        row.append(float(self.n))
        return row

    def copy_window(self) -> DeviceState:
        other = DeviceState(len(self.cnt), self.start)
        other.n, other.last_ts = self.n, self.last_ts
        other.cnt, other.mean, other.m2 = list(self.cnt), list(self.mean), list(self.m2)
        other.lo, other.hi = list(self.lo), list(self.hi)
        return other

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "n": self.n,
            "last_ts": self.last_ts,
            "cnt": self.cnt,
            "mean": self.mean,
            "m2": self.m2,
            "lo": self.lo,
            "hi": self.hi,
            "firing": self.firing,
            "flag_run": self.flag_run,
            "clear_run": self.clear_run,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], k: int) -> DeviceState:
        dev = cls(k, int(d["start"]))
        dev.n, dev.last_ts = int(d["n"]), float(d["last_ts"])
        dev.cnt = [int(v) for v in d["cnt"]]
        dev.mean, dev.m2 = [float(v) for v in d["mean"]], [float(v) for v in d["m2"]]
        dev.lo, dev.hi = [float(v) for v in d["lo"]], [float(v) for v in d["hi"]]
        if not all(len(x) == k for x in (dev.cnt, dev.mean, dev.m2, dev.lo, dev.hi)):
            raise state_codec.StateError(f"window sums are not for {k} metrics")
        dev.firing = bool(d["firing"])
        dev.flag_run, dev.clear_run = int(d["flag_run"]), int(d["clear_run"])
        return dev


@dataclass(frozen=True, slots=True)
class Window:
    """A closed window: `features` is None when it cannot be scored."""

    device: DeviceRef
    start: int  # window index
    last_ts: float  # the last report in it
    features: list[float] | None


class WindowBuilder:
    """Cuts each device's reports into feature windows (records in time order per device)."""

    def __init__(self, metrics: Sequence[str], window_s: int, min_reports: int = 1) -> None:
        self.metrics = tuple(metrics)
        self.window_s = window_s
        self.min_reports = min_reports
        self.devices: dict[DeviceRef, DeviceState] = {}
        self.late = 0  # reports dropped because their window had closed

    def values(self, record: Record) -> list[float | None] | None:
        """The record's configured metrics (None where absent or not finite), or None if none."""
        out: list[float | None] = []
        seen = False
        for m in self.metrics:
            x = _finite(record.metrics.get(m))
            seen = seen or x is not None
            out.append(x)
        return out if seen else None

    def add(self, record: Record) -> Window | None:
        """Take a report; return the window it closed, if any."""
        values = self.values(record)
        if values is None:
            return None
        w = math.floor(record.ts / self.window_s)
        dev = self.devices.get(record.device)
        closed = None
        if dev is None:
            dev = self.devices[record.device] = DeviceState(len(self.metrics), w)
        elif w > dev.start:
            if dev.n:
                closed = Window(record.device, dev.start, dev.last_ts, self._row(dev))
            dev.reset(w)
        elif w < dev.start:
            self.late += 1
            return None
        dev.add(record.ts, values)
        return closed

    def flush(self) -> list[Window]:
        """Close every open window (end of a history read)."""
        out = [
            Window(device, dev.start, dev.last_ts, self._row(dev))
            for device, dev in self.devices.items()
            if dev.n
        ]
        for dev in self.devices.values():
            dev.reset(dev.start + 1)
        return out

    def _row(self, dev: DeviceState) -> list[float] | None:
        return dev.features(self.min_reports)


# -- hysteresis (the same steps replayed by the calibration) -------------------------------


def hysteresis_step(
    dev: DeviceState, flagged: bool, raise_after: int, clear_after: int
) -> Change | None:
    if flagged:
        dev.flag_run += 1
        dev.clear_run = 0
        if not dev.firing and dev.flag_run >= raise_after:
            dev.firing = True
            return "raise"
        return None
    dev.flag_run = 0
    if dev.firing:
        dev.clear_run += 1
        if dev.clear_run >= clear_after:
            dev.firing, dev.clear_run = False, 0
            return "clear"
    return None


def count_raises(
    flags_by_device: Iterable[Sequence[bool]], raise_after: int, clear_after: int
) -> int:
    raises = 0
    for flags in flags_by_device:
        dev = DeviceState(0)
        for f in flags:
            raises += hysteresis_step(dev, f, raise_after, clear_after) == "raise"
    return raises


# -- model versions --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelMeta:
    version: str
    metrics: tuple[str, ...]
    window_s: int
    features: tuple[str, ...]
    threshold: float  # raw score at which a window is flagged
    scale: float  # raw-score units per logistic unit of the [0, 1] score
    center: tuple[float, ...]  # per feature, the training median (for explanations)
    spread: tuple[float, ...]  # per feature, a robust scale of the training values
    low: tuple[float, ...]  # per feature, the training 0.5 % quantile
    high: tuple[float, ...]  # per feature, the training 99.5 % quantile
    sha256: str
    raw: Mapping[str, Any]

    @classmethod
    def parse(cls, data: Any, version: str) -> ModelMeta:
        try:
            if data["format"] != META_FORMAT:
                raise ModelError(f"metadata format {data['format']!r} is not {META_FORMAT}")
            n = len(data["features"])
            vectors = [
                tuple(float(v) for v in data[k]) for k in ("center", "spread", "low", "high")
            ]
            if any(len(v) != n for v in vectors):
                raise ModelError("metadata vectors do not match the features")
            meta = cls(
                version=str(data["version"]),
                metrics=tuple(str(m) for m in data["metrics"]),
                window_s=int(data["window_s"]),
                features=tuple(str(f) for f in data["features"]),
                threshold=float(data["threshold"]),
                scale=float(data["scale"]),
                center=vectors[0],
                spread=vectors[1],
                low=vectors[2],
                high=vectors[3],
                sha256=str(data["sha256"]),
                raw=data,
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"metadata is incomplete or malformed: {exc!r}") from None
        if meta.version != version:
            raise ModelError(f"metadata names version {meta.version!r}, folder is {version!r}")
        if not (math.isfinite(meta.threshold) and math.isfinite(meta.scale) and meta.scale > 0):
            raise ModelError("metadata threshold or scale is not a finite number")
        return meta


def untrusted_types(path: Path) -> list[str]:
    """The types in a skops file that skops does not trust by default (reads, runs nothing)."""
    import skops.io as sio  # type: ignore[import-untyped]  # noqa: PLC0415 - heavy

    try:
        return sorted(sio.get_untrusted_types(file=path))
    except Exception as exc:  # a corrupt zip or schema: refuse, whatever the exception
        raise ModelError(f"{path.name} is not a readable skops file: {exc!r}"[:300]) from None


def load_estimator(path: Path) -> Any:
    """Load a skops file, allowing exactly the types it needs from `TRUSTED_TYPES`."""
    import skops.io as sio  # noqa: PLC0415

    needed = untrusted_types(path)
    refused = sorted(set(needed) - TRUSTED_TYPES)
    if refused:
        raise ModelError(f"{path.name} holds types outside the allow-list: {', '.join(refused)}")
    try:
        return sio.load(path, trusted=needed)
    except Exception as exc:
        raise ModelError(f"{path.name} does not load: {exc!r}"[:300]) from None


@dataclass(frozen=True)
class LoadedModel:
    meta: ModelMeta
    estimator: Any

    @property
    def version(self) -> str:
        return self.meta.version

    def raw_scores(self, rows: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Higher = more anomalous (scikit-learn's score_samples is higher = more normal)."""
        x = np.asarray(rows, dtype=np.float64)
        return -np.asarray(self.estimator.score_samples(x), dtype=np.float64)

    def unit(self, raw: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        z = np.clip((raw - self.meta.threshold) / self.meta.scale, -50.0, 50.0)
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)


def load_version(model_dir: Path, version: str) -> LoadedModel:
    """Read and check one version folder (metadata, file hash, allow-list)."""
    folder = model_dir / version
    try:
        data = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        blob = (folder / MODEL_FILE).read_bytes()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {version}: {exc!r}"[:300]) from None
    meta = ModelMeta.parse(data, version)
    if hashlib.sha256(blob).hexdigest() != meta.sha256:
        raise ModelError(f"{version}/{MODEL_FILE} does not match its sha256 (corrupt or altered)")
    estimator = load_estimator(folder / MODEL_FILE)
    if not callable(getattr(estimator, "score_samples", None)):
        raise ModelError(f"{version} holds no scoring model")
    n_in = getattr(estimator, "n_features_in_", None)
    if n_in != len(meta.features):
        raise ModelError(
            f"{version}: the model takes {n_in} features, metadata names {len(meta.features)}"
        )
    return LoadedModel(meta, estimator)


def versions(model_dir: Path) -> list[str]:
    """Version folder names, oldest first (names sort by training time)."""
    try:
        names = [p.name for p in model_dir.iterdir() if p.is_dir() and _VERSION.match(p.name)]
    except OSError:
        return []
    return sorted(names)


def fits(meta: ModelMeta, params: LearnedParams) -> str | None:
    """Why a model does not fit this detector's configuration, or None."""
    if meta.metrics != params.metrics:
        return f"trained on metrics {list(meta.metrics)}, configured {list(params.metrics)}"
    if meta.window_s != params.window_s:
        return f"trained on {meta.window_s} s windows, configured {params.window_s} s"
    if meta.features != feature_names(params.metrics):
        return "its feature list differs from this detector's"
    return None


# -- the detector ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowVerdict(Verdict):
    """A verdict on one feature window: the base evidence plus every feature, the calibrated
    threshold and the model version."""

    features: tuple[tuple[str, float], ...] = ()
    threshold: float = 0.0
    model_version: str = ""
    window_start: float = 0.0

    def evidence(self) -> dict[str, EvidenceValue]:
        ev = Verdict.evidence(self)
        ev["threshold"] = self.threshold
        ev["model_version"] = self.model_version
        ev["window_start"] = self.window_start
        for name, value in self.features:
            ev[f"f_{name}"] = value
        return ev


@register("learned")
class LearnedDetector(ScoringDetector):
    params_model = LearnedParams
    params: LearnedParams

    def __init__(self, params: DetectorParams) -> None:
        if not isinstance(params, LearnedParams):
            raise TypeError("LearnedDetector needs LearnedParams")
        super().__init__(params)
        self.windows_ = WindowBuilder(params.metrics, params.window_s, params.min_reports)
        # Not learned state (no trailing underscore): the model comes from model_dir.
        self.model: LoadedModel | None = None
        self.skipped: dict[str, str] = {}  # version -> why it was refused
        self._next_check = -math.inf

    # -- model versions -------------------------------------------------------------------
    def check_model(self, now: float) -> None:
        """Every `reload_every_s` of stream time: swap to the newest valid newer version."""
        if now < self._next_check:
            return
        self._next_check = now + self.params.reload_every_s
        self.refresh_model()

    def refresh_model(self) -> bool:
        """Look for a newer valid version now; True when the model changed."""
        model_dir = Path(self.params.model_dir)
        current = self.model.version if self.model is not None else ""
        for version in reversed(versions(model_dir)):
            if version <= current:
                break
            if version in self.skipped:
                continue
            try:
                model = load_version(model_dir, version)
                why = fits(model.meta, self.params)
                if why is not None:
                    raise ModelError(why)
            except ModelError as exc:
                if len(self.skipped) >= _MAX_SKIPPED:
                    self.skipped.pop(next(iter(self.skipped)))
                self.skipped[version] = str(exc)
                log.warning(
                    "learned_model_skipped",
                    model_dir=str(model_dir),
                    version=version,
                    reason=str(exc),
                    kept=current or None,
                )
                continue
            self.model = model
            log.info(
                "learned_model_loaded",
                model_dir=str(model_dir),
                version=version,
                previous=current or None,
            )
            return True
        return False

    # -- contract -------------------------------------------------------------------------
    def learn(self, records: Sequence[Record]) -> None:
        """The model is fitted offline (`sentinel train`): this only advances the windows."""
        for record in records:
            self.windows_.add(record)

    def score(self, records: Sequence[Record]) -> Scores:
        """Each record: the score of its device's window so far, the record included."""
        out = np.full(len(records), np.nan)
        if records:
            self.check_model(records[0].ts)
        model = self.model
        if model is None:
            return out
        b = self.windows_
        scratch: dict[DeviceRef, DeviceState] = {}
        rows: list[list[float]] = []
        where: list[int] = []
        for i, record in enumerate(records):
            values = b.values(record)
            if values is None:
                continue
            w = math.floor(record.ts / b.window_s)
            dev = scratch.get(record.device)
            if dev is None:
                known = b.devices.get(record.device)
                dev = known.copy_window() if known is not None else DeviceState(len(b.metrics), w)
                scratch[record.device] = dev
            if w > dev.start:
                dev.reset(w)
            elif w < dev.start:
                continue
            dev.add(record.ts, values)
            row = dev.features(b.min_reports)
            if row is not None:
                rows.append(row)
                where.append(i)
        if rows:
            out[where] = model.unit(model.raw_scores(rows))
        return out

    def decide(self, records: Sequence[Record]) -> list[Verdict]:
        if records:
            self.check_model(records[0].ts)
        closed = [w for r in records if (w := self.windows_.add(r)) is not None]
        return self.decide_windows(closed)

    def decide_windows(self, closed: Sequence[Window]) -> list[Verdict]:
        model = self.model
        scorable = [w for w in closed if w.features is not None]
        if model is None or not scorable:
            return []
        raw = model.raw_scores([w.features for w in scorable if w.features is not None])
        unit = model.unit(raw)
        p = self.params
        verdicts: list[Verdict] = []
        for w, r, s in zip(scorable, raw.tolist(), unit.tolist(), strict=True):
            dev = self.windows_.devices.get(w.device)
            if dev is None:  # forgotten meanwhile
                continue
            flagged = r >= model.meta.threshold
            change = hysteresis_step(dev, flagged, p.raise_after, p.clear_after)
            verdicts.append(self._verdict(model, w, s, flagged, change))
        return verdicts

    def tracked_devices(self) -> int:
        return len(self.windows_.devices)

    def forget(self, device_ids: set[str]) -> None:
        devices = self.windows_.devices
        for device in [d for d in devices if d.device_id in device_ids]:
            del devices[device]

    def state_dict(self) -> dict[str, Any]:
        rows = [
            {"device": list(device), **dev.to_dict()}
            for device, dev in self.windows_.devices.items()
        ]
        learned = {
            "devices": rows,
            "late": self.windows_.late,
            "metrics": list(self.params.metrics),
        }
        return state_codec.wrap(self.type_name, learned)

    def load_state(self, state: Mapping[str, Any]) -> None:
        learned = state_codec.unwrap(self.type_name, state)
        k = len(self.params.metrics)
        devices: dict[DeviceRef, DeviceState] = {}
        try:
            if list(learned["metrics"]) != list(self.params.metrics):
                raise state_codec.StateError("state was saved for other metrics")
            for row in learned["devices"]:
                devices[DeviceRef(*(str(v) for v in row["device"]))] = DeviceState.from_dict(row, k)
            late = int(learned["late"])
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, state_codec.StateError):
                raise
            raise state_codec.StateError(f"learned state does not fit: {exc!r}") from None
        self.windows_.devices = devices
        self.windows_.late = late

    # -- internals ------------------------------------------------------------------------
    def _verdict(
        self, model: LoadedModel, w: Window, score: float, flagged: bool, change: Change | None
    ) -> WindowVerdict:
        meta = model.meta
        assert w.features is not None
        z = [(x - c) / s for x, c, s in zip(w.features, meta.center, meta.spread, strict=True)]
        top = max(range(len(z)), key=lambda i: abs(z[i]))
        name = meta.features[top]
        if flagged:
            reason = f"window unlike training; most unusual {name} ({z[top]:+.1f} robust sd)"
        else:
            reason = "window like training"
        return WindowVerdict(
            device=w.device,
            ts=w.last_ts,
            metric=name,
            value=w.features[top],
            score=score,
            anomalous=flagged,
            expected=meta.center[top],
            expected_low=meta.low[top],
            expected_high=meta.high[top],
            baseline=f"model {meta.version}",
            reason=reason,
            change=change,
            features=tuple(zip(meta.features, (round(x, 6) for x in w.features), strict=True)),
            threshold=meta.threshold,
            model_version=meta.version,
            window_start=float(w.start * self.params.window_s),
        )


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    x = float(value)
    return x if math.isfinite(x) else None
