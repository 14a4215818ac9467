"""Seasonal robust baseline: per device and metric, what is normal now, at this hour, and ever.

For every configured metric of every device, three robust baselines, all bounded in memory:

- **recent**: median and MAD of the last `recent_size` values (a ring buffer);
- **season**: one bucket per hour of the day or of the week (`bucket_minutes` wide), each an
  exponentially weighted, clipped (Huber-like) location and absolute deviation, so one odd
  night does not move it far. With `day_fallback` (hour of the week only), an hour-of-day
  profile is learned too and used while a weekly bucket has seen fewer than
  `season_min_points` values: a week-aware profile without weeks of blindness first;
- **range**: the lowest and highest values ever seen, or with `range_points` in about the last
  `range_points` values (kept as 16 blocks of extremes, so an old outlier stops masking a new
  one).

A value's distance to the recent and seasonal baselines, in robust scales (never below
`range_floor` of the observed range nor `relative_floor` of the level), goes through a
calibration per baseline: the average of the last `smoothing` log-distances is compared with
its own long-run mean and spread, and the Gaussian tail probability becomes a score in [0, 1]
(0.5 is a one-in-100,000 tail). So the same threshold fits a quiet sensor and a noisy one. A
value beyond the range, by `new_extreme_margin` of it, scores 1.

The decision: a point is flagged when its score reaches `threshold` and it is at least
`absolute_floor[metric]` away from what was expected (an absolute floor under the relative
rule). The first flagged point raises an alert; for `quiet_seconds` after it no point can raise
again; `clear_after` unflagged points clear it. Flagged points are not learned from (unless
`learn_flagged`), so an attack does not become the baseline; but `shift_after` flagged points in
a row on the same side are a level shift: the alert raised once, the detector adopts the new
level (recent buffer and seasonal profile move to it) and clears.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from detectors import state as state_codec
from detectors.base import (
    Change,
    DetectorParams,
    Scores,
    ScoringDetector,
    Verdict,
    check_metric_names,
)
from detectors.model import DeviceRef, Record
from detectors.registry import register

Season = Literal["hour_of_day", "hour_of_week", "none"]

_DAY = 86_400
_PERIOD = {"hour_of_day": _DAY, "hour_of_week": 7 * _DAY, "none": 0}
_MONDAY = 3 * _DAY  # 1970-01-01 was a Thursday: shift so bucket 0 starts on Monday 00:00
_MAD_TO_SIGMA = 1.4826
_MEAN_ABS_TO_SIGMA = 1.2533
_CLIP = 3.0  # seasonal updates are clipped at this many scales
_LOG_EPS = 1e-10  # score = log(tail) / log(1e-10), so 1.0 is a one-in-ten-billion tail
_RANGE_BLOCKS = 16  # `range_points` is tracked as this many blocks of extremes
_PEER_SAMPLE = 32  # peer_cold_start looks at most at this many peers of a group
_ADOPTIONS_KEPT = 8  # adopted level shifts remembered per series, for an operator to reject


class SeasonalParams(DetectorParams):
    metrics: tuple[str, ...] = Field(min_length=1, max_length=64)
    season: Season = "hour_of_day"
    bucket_minutes: int = Field(default=60, ge=1, le=1440)
    utc_offset_minutes: int = Field(default=0, ge=-720, le=840)
    day_fallback: bool = False
    season_alpha: float = Field(default=0.05, gt=0, le=1)
    season_min_points: int = Field(default=24, ge=1)
    recent_size: int = Field(default=128, ge=8, le=4096)
    warmup: int = Field(default=32, ge=4)
    smoothing: int = Field(default=20, ge=1, le=1000)
    season_smoothing: int = Field(default=10, ge=1, le=1000)
    spike_channel: bool = True
    calibration_alpha: float = Field(default=0.001, gt=0, le=1)
    calibration_warmup: int = Field(default=100, ge=1)
    range_floor: float = Field(default=0.03, ge=0, le=1)
    relative_floor: float = Field(default=0.0, ge=0)
    absolute_floor: dict[str, float] = Field(default_factory=dict)
    new_extreme_margin: float | None = Field(default=0.02, ge=0)
    range_points: int | None = Field(default=None, ge=_RANGE_BLOCKS, le=10_000_000)
    # A new series starts from a peer's baseline (same tenant, zone, kind and metric) when
    # `peer_min` peers are past their warm-up: scored from its first point, not after `warmup`.
    peer_cold_start: bool = False
    peer_min: int = Field(default=3, ge=1, le=1000)
    threshold: float = Field(default=0.5, gt=0, le=1)
    quiet_seconds: float = Field(default=4 * 3600, ge=0)
    clear_after: int = Field(default=3, ge=1)
    shift_after: int = Field(default=12, ge=2)
    learn_flagged: bool = False
    band: float = Field(default=3.0, gt=0)

    @field_validator("metrics")
    @classmethod
    def _metric_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return check_metric_names(v)

    @model_validator(mode="after")
    def _buckets_fit(self) -> SeasonalParams:
        period = _PERIOD[self.season]
        if period and period % (self.bucket_minutes * 60):
            raise ValueError(
                f"bucket_minutes={self.bucket_minutes} does not divide a {self.season}"
            )
        if self.day_fallback and (self.season != "hour_of_week" or 1440 % self.bucket_minutes):
            raise ValueError("day_fallback needs season hour_of_week with buckets dividing a day")
        unknown = set(self.absolute_floor) - set(self.metrics)
        if unknown:
            raise ValueError(f"absolute_floor names metrics not in metrics: {sorted(unknown)}")
        return self

    @property
    def buckets(self) -> int:
        period = _PERIOD[self.season]
        return period // (self.bucket_minutes * 60) if period else 0

    @property
    def slots(self) -> int:
        """Seasonal profile entries: the buckets, then with `day_fallback` one per time of day."""
        return self.buckets + (1440 // self.bucket_minutes if self.day_fallback else 0)


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    h = n // 2
    return s[h] if n % 2 else 0.5 * (s[h - 1] + s[h])


class _Calibrator:
    """Turns a stream of distances into tail scores against the stream's own history."""

    __slots__ = ("mean", "n", "recent", "var")

    def __init__(self, smoothing: int) -> None:
        self.recent: deque[float] = deque(maxlen=smoothing)
        self.mean = 0.0
        self.var = 1.0
        self.n = 0

    def smoothed(self, r: float) -> float:
        """Average of the last `smoothing` log-distances, the new one included."""
        window = self.recent
        if window.maxlen is not None and len(window) == window.maxlen:
            return (sum(window) - window[0] + r) / len(window)
        return (sum(window) + r) / (len(window) + 1)

    def score(self, r: float, warmup: int) -> float:
        if self.n < warmup:
            return 0.0
        z = (self.smoothed(r) - self.mean) / math.sqrt(max(self.var, 1e-6))
        tail = 0.5 * math.erfc(z / math.sqrt(2.0))
        return min(1.0, math.log(tail + _LOG_EPS) / math.log(_LOG_EPS))

    def learn(self, r: float, alpha: float) -> None:
        m = self.smoothed(r)
        self.recent.append(r)
        self.n += 1
        a = max(alpha, 1.0 / self.n)
        d = m - self.mean
        self.mean += a * d
        self.var = (1.0 - a) * (self.var + a * d * d)

    def to_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent), "mean": self.mean, "var": self.var, "n": self.n}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], smoothing: int) -> _Calibrator:
        c = cls(smoothing)
        c.recent.extend(float(v) for v in d["recent"])
        c.mean, c.var, c.n = float(d["mean"]), float(d["var"]), int(d["n"])
        return c


@dataclass(slots=True)
class _Eval:
    score: float
    baseline: str  # "warmup", "recent", "season", "range"
    expected: float
    scale: float
    r_recent: float | None
    r_season: float | None
    bucket: int
    slot: int = -1  # the profile entry the seasonal score used (a bucket, or a time of day)
    lo: float = math.inf  # the range the new-extreme rule compared the value with
    hi: float = -math.inf


class _Series:
    """All that is learned for one metric of one device."""

    __slots__ = (
        "adoptions",
        "b_dev",
        "b_mean",
        "b_n",
        "blocks",
        "cal_recent",
        "cal_season",
        "cal_spike",
        "cal_spike_season",
        "clear_run",
        "firing",
        "hi",
        "hold_level",
        "lo",
        "quiet_until",
        "recent",
        "seed_left",
        "seeded_from",
        "shift_run",
        "shift_sign",
    )

    def __init__(self, p: SeasonalParams) -> None:
        self.recent: deque[float] = deque(maxlen=p.recent_size)
        n = p.slots
        self.b_mean = [0.0] * n
        self.b_dev = [0.0] * n
        self.b_n = [0] * n
        self.lo = math.inf
        self.hi = -math.inf
        # With `range_points`: [count, low, high] of the last blocks of points, oldest first.
        self.blocks: deque[list[float]] = deque(maxlen=_RANGE_BLOCKS + 1)
        self.cal_recent = _Calibrator(p.smoothing)
        self.cal_season = _Calibrator(p.season_smoothing)
        self.cal_spike = _Calibrator(1)
        self.cal_spike_season = _Calibrator(1)
        self.firing = False
        self.quiet_until = -math.inf
        self.clear_run = 0
        self.shift_run: list[float] = []
        self.shift_sign = 0
        self.seeded_from = ""  # the peer whose baseline this series started from
        self.seed_left = 0  # own values still to learn before the peer's are all replaced
        # (device time, shift) of the last level shifts adopted, that an operator may reject
        self.adoptions: list[tuple[float, float]] = []
        self.hold_level = False  # a shift was rejected: adopt none until back to normal

    # -- scoring (pure) -------------------------------------------------------------------
    def evaluate(self, p: SeasonalParams, ts: float, x: float) -> _Eval:
        bucket = _bucket(p, ts)
        if len(self.recent) < p.warmup:
            center = _median(self.recent) if self.recent else x
            return _Eval(0.0, "warmup", center, 0.0, None, None, bucket)
        m = _median(self.recent)
        mad = _MAD_TO_SIGMA * _median([abs(v - m) for v in self.recent])
        floor = max(p.range_floor * (self.hi - self.lo), p.relative_floor * abs(m), 1e-9)
        scale = max(mad, floor)
        r_recent = math.log1p(abs(x - m) / scale)
        s_recent = self.cal_recent.score(r_recent, p.calibration_warmup)
        if p.spike_channel:
            s_recent = max(s_recent, self.cal_spike.score(r_recent, p.calibration_warmup))
        best = _Eval(s_recent, "recent", m, scale, r_recent, None, bucket)
        slot = self._profile_slot(p, bucket)
        if slot >= 0:
            best.slot = slot
            center = self.b_mean[slot]
            s_scale = max(_MEAN_ABS_TO_SIGMA * self.b_dev[slot], floor)
            best.r_season = r_season = math.log1p(abs(x - center) / s_scale)
            s = self.cal_season.score(r_season, p.calibration_warmup)
            if p.spike_channel:
                s = max(s, self.cal_spike_season.score(r_season, p.calibration_warmup))
            if s > best.score:
                best.score, best.baseline, best.expected, best.scale = s, "season", center, s_scale
        best.lo, best.hi = self.extremes(p)
        margin = p.new_extreme_margin
        if margin is not None and best.hi > best.lo:
            reach = margin * (best.hi - best.lo)
            if x > best.hi + reach or x < best.lo - reach:
                best.score, best.baseline = 1.0, "range"
        return best

    def extremes(self, p: SeasonalParams) -> tuple[float, float]:
        """Lowest and highest values ever seen, or in about the last `range_points`."""
        if p.range_points is None or not self.blocks:
            return self.lo, self.hi
        return min(b[1] for b in self.blocks), max(b[2] for b in self.blocks)

    # -- learning -------------------------------------------------------------------------
    def learn(self, p: SeasonalParams, ev: _Eval, x: float, *, baseline: bool) -> None:
        if self.hold_level and not baseline:
            # A rejected level: its distances must not become usual to the calibration
            # either, or the series would clear while still at that level.
            return
        if ev.r_recent is not None:
            self.cal_recent.learn(ev.r_recent, p.calibration_alpha)
            if p.spike_channel:
                self.cal_spike.learn(ev.r_recent, p.calibration_alpha)
        if ev.r_season is not None:
            self.cal_season.learn(ev.r_season, p.calibration_alpha)
            if p.spike_channel:
                self.cal_spike_season.learn(ev.r_season, p.calibration_alpha)
        self.lo = min(self.lo, x)
        self.hi = max(self.hi, x)
        if p.range_points is not None:
            self._learn_block(-(-p.range_points // _RANGE_BLOCKS), x)
        if not baseline:
            return
        self.recent.append(x)
        if self.seed_left:
            self.seed_left -= 1
            if not self.seed_left:  # the recent baseline is all its own now
                self.seeded_from = ""
        if ev.bucket < 0:
            return
        self._learn_slot(p, ev.bucket, x)
        if p.day_fallback:
            self._learn_slot(p, _day_slot(p, ev.bucket), x)

    def _profile_slot(self, p: SeasonalParams, bucket: int) -> int:
        """The seasonal entry to score against: the bucket once it has learned enough, else
        (`day_fallback`) the same time of day on any day; -1 if neither has."""
        if bucket < 0:
            return -1
        if self.b_n[bucket] >= p.season_min_points:
            return bucket
        if p.day_fallback and self.b_n[day := _day_slot(p, bucket)] >= p.season_min_points:
            return day
        return -1

    def _learn_slot(self, p: SeasonalParams, b: int, x: float) -> None:
        n = self.b_n[b]
        if n == 0:
            self.b_mean[b], self.b_dev[b] = x, 0.0
        else:
            a = max(p.season_alpha, 1.0 / (n + 1))
            mean, dev = self.b_mean[b], self.b_dev[b]
            if n >= p.season_min_points:
                lim = _CLIP * max(_MEAN_ABS_TO_SIGMA * dev, 1e-9)
                x = min(max(x, mean - lim), mean + lim)
            self.b_dev[b] = dev + a * (abs(x - mean) - dev)
            self.b_mean[b] = mean + a * (x - mean)
        self.b_n[b] = min(n + 1, 1_000_000)

    def _learn_block(self, size: int, x: float) -> None:
        """Extend the newest block of `size` points, or start one; the oldest then drops off."""
        last = self.blocks[-1] if self.blocks else None
        if last is None or last[0] >= size:
            self.blocks.append([1.0, x, x])
        else:
            last[0] += 1.0
            last[1], last[2] = min(last[1], x), max(last[2], x)

    def adopt(self, p: SeasonalParams, ts: float) -> float:
        """Take the last run of flagged values as the new normal; return the level change."""
        old = _median(self.recent) if self.recent else _median(self.shift_run)
        delta = _median(self.shift_run) - old
        # Move the whole buffer: the level changes, the spread learned so far is kept.
        shifted = [v + delta for v in self.recent]
        self.recent.clear()
        self.recent.extend(shifted)
        for b, n in enumerate(self.b_n):
            if n:
                self.b_mean[b] += delta
        self.shift_run = []
        self.shift_sign = 0
        self.adoptions = [*self.adoptions[-(_ADOPTIONS_KEPT - 1) :], (ts, delta)]
        return delta

    def reject_adopted(self, since: float) -> float:
        """Undo the shifts adopted at or after `since` (an operator's verdict on the alert that
        started then); returns the total shift undone, 0.0 when there was none."""
        delta = sum(d for ts, d in self.adoptions if ts >= since)
        kept = [(ts, d) for ts, d in self.adoptions if ts < since]
        if len(kept) == len(self.adoptions):
            return 0.0
        self.adoptions = kept
        restored = [v - delta for v in self.recent]
        self.recent.clear()
        self.recent.extend(restored)
        for b, n in enumerate(self.b_n):
            if n:
                self.b_mean[b] -= delta
        self.hold_level = True
        self.quiet_until = -math.inf  # the rejected level raises again at once
        return delta

    # -- state ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        enc = state_codec.encode
        return {
            "recent": list(self.recent),
            "b_mean": self.b_mean,
            "b_dev": self.b_dev,
            "b_n": self.b_n,
            "lo": enc(self.lo),
            "hi": enc(self.hi),
            "blocks": [list(b) for b in self.blocks],
            "cal_recent": self.cal_recent.to_dict(),
            "cal_season": self.cal_season.to_dict(),
            "cal_spike": self.cal_spike.to_dict(),
            "cal_spike_season": self.cal_spike_season.to_dict(),
            "firing": self.firing,
            "quiet_until": enc(self.quiet_until),
            "clear_run": self.clear_run,
            "shift_run": self.shift_run,
            "shift_sign": self.shift_sign,
            "seeded_from": self.seeded_from,
            "seed_left": self.seed_left,
            "adoptions": [list(a) for a in self.adoptions],
            "hold_level": self.hold_level,
        }

    @classmethod
    def from_dict(cls, p: SeasonalParams, d: Mapping[str, Any]) -> _Series:
        dec = state_codec.decode
        s = cls(p)
        s.recent.extend(float(v) for v in d["recent"])
        if len(d["b_n"]) != p.slots:
            raise state_codec.StateError(f"state has {len(d['b_n'])} buckets, not {p.slots}")
        s.b_mean = [float(v) for v in d["b_mean"]]
        s.b_dev = [float(v) for v in d["b_dev"]]
        s.b_n = [int(v) for v in d["b_n"]]
        s.lo, s.hi = float(dec(d["lo"])), float(dec(d["hi"]))
        # A state saved before `range_points` existed has no blocks: they refill.
        s.blocks.extend([float(v) for v in b[:3]] for b in d.get("blocks") or [])
        s.cal_recent = _Calibrator.from_dict(d["cal_recent"], p.smoothing)
        s.cal_season = _Calibrator.from_dict(d["cal_season"], p.season_smoothing)
        s.cal_spike = _Calibrator.from_dict(d["cal_spike"], 1)
        s.cal_spike_season = _Calibrator.from_dict(d["cal_spike_season"], 1)
        s.firing = bool(d["firing"])
        s.quiet_until = float(dec(d["quiet_until"]))
        s.clear_run = int(d["clear_run"])
        s.shift_run = [float(v) for v in d["shift_run"]]
        s.shift_sign = int(d["shift_sign"])
        s.seeded_from = str(d.get("seeded_from", ""))[:128]
        s.seed_left = int(d.get("seed_left", 0))
        s.adoptions = [(float(a[0]), float(a[1])) for a in d.get("adoptions") or []][
            -_ADOPTIONS_KEPT:
        ]
        s.hold_level = bool(d.get("hold_level", False))
        return s

    def seeded(self, p: SeasonalParams, peer_id: str) -> _Series:
        """A copy of this (a peer's) baseline for a new device: what it learned, none of its
        episode (firing, quiet period, shift run)."""
        copy = _Series.from_dict(p, self.to_dict())
        copy.firing, copy.quiet_until, copy.clear_run = False, -math.inf, 0
        copy.shift_run, copy.shift_sign = [], 0
        copy.adoptions, copy.hold_level = [], False
        copy.seeded_from, copy.seed_left = peer_id, p.recent_size
        return copy


def _bucket(p: SeasonalParams, ts: float) -> int:
    period = _PERIOD[p.season]
    if not period:
        return -1
    local = ts + p.utc_offset_minutes * 60 + (_MONDAY if p.season == "hour_of_week" else 0)
    return int((local % period) // (p.bucket_minutes * 60))


def _day_slot(p: SeasonalParams, bucket: int) -> int:
    """The hour-of-day entry after the hour-of-week buckets (bucket 0 is Monday 00:00)."""
    per_day = 1440 // p.bucket_minutes
    return p.buckets + bucket % per_day


def _bucket_name(p: SeasonalParams, bucket: int) -> str:
    minutes = bucket * p.bucket_minutes
    day, minute_of_day = divmod(minutes, 1440)
    hhmm = f"{minute_of_day // 60:02d}:{minute_of_day % 60:02d}"
    if p.season == "hour_of_week":
        return f"{('Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun')[day]} {hhmm}"
    return hhmm


@register("seasonal")
class SeasonalBaseline(ScoringDetector):
    params_model = SeasonalParams
    params: SeasonalParams

    def __init__(self, params: DetectorParams) -> None:
        if not isinstance(params, SeasonalParams):
            raise TypeError("SeasonalBaseline needs SeasonalParams")
        super().__init__(params)
        self.series_: dict[tuple[DeviceRef, str], _Series] = {}
        # peer_cold_start: series by (tenant, zone, kind, metric), oldest first (derived from
        # series_, rebuilt on load; not state).
        self._peers: dict[tuple[str, str, str, str], list[tuple[DeviceRef, str]]] = {}

    # -- contract -------------------------------------------------------------------------
    def learn(self, records: Sequence[Record]) -> None:
        p = self.params
        for record, metric, x in self._points(records):
            series = self._series(record.device, metric)
            series.learn(p, series.evaluate(p, record.ts, x), x, baseline=True)

    def score(self, records: Sequence[Record]) -> Scores:
        p = self.params
        out = np.full(len(records), np.nan)
        for i, record in enumerate(records):
            for metric in p.metrics:
                x = _finite(record.metrics.get(metric))
                if x is None:
                    continue
                series = self.series_.get((record.device, metric))
                s = 0.0 if series is None else series.evaluate(p, record.ts, x).score
                out[i] = s if math.isnan(out[i]) else max(out[i], s)
        return out

    def decide(self, records: Sequence[Record]) -> list[Verdict]:
        p = self.params
        verdicts: list[Verdict] = []
        for record, metric, x in self._points(records):
            series = self._series(record.device, metric)
            ev = series.evaluate(p, record.ts, x)
            verdicts.append(self._decide_one(series, ev, record, metric, x))
        return verdicts

    def tracked_devices(self) -> int:
        return len({device for device, _ in self.series_})

    def reject_new_normal(self, device: DeviceRef, since: float) -> list[str]:
        undone = []
        for metric in self.params.metrics:
            series = self.series_.get((device, metric))
            if series is not None and series.adoptions and series.adoptions[-1][0] >= since:
                delta = series.reject_adopted(since)
                undone.append(f"{metric}: level shift of {delta:+g} undone")
        return undone

    def forget(self, device_ids: set[str]) -> None:
        for key in [k for k in self.series_ if k[0].device_id in device_ids]:
            del self.series_[key]
        self._index_peers()

    def state_dict(self) -> dict[str, Any]:
        rows = [
            {"device": list(device), "metric": metric, **series.to_dict()}
            for (device, metric), series in self.series_.items()
        ]
        return state_codec.wrap(self.type_name, {"series": rows})

    def load_state(self, state: Mapping[str, Any]) -> None:
        learned = state_codec.unwrap(self.type_name, state)
        series: dict[tuple[DeviceRef, str], _Series] = {}
        try:
            for row in learned["series"]:
                key = (DeviceRef(*(str(v) for v in row["device"])), str(row["metric"]))
                series[key] = _Series.from_dict(self.params, row)
        except (KeyError, TypeError, ValueError) as exc:
            raise state_codec.StateError(f"seasonal state does not fit: {exc!r}") from None
        self.series_ = series
        self._index_peers()

    # -- internals ------------------------------------------------------------------------
    def _points(self, records: Sequence[Record]) -> Iterator[tuple[Record, str, float]]:
        metrics = self.params.metrics
        for record in records:
            for metric in metrics:
                x = _finite(record.metrics.get(metric))
                if x is not None:
                    yield record, metric, x

    def _series(self, device: DeviceRef, metric: str) -> _Series:
        key = (device, metric)
        series = self.series_.get(key)
        if series is None:
            series = self.series_[key] = self._new_series(device, metric)
        return series

    def _new_series(self, device: DeviceRef, metric: str) -> _Series:
        p = self.params
        if not p.peer_cold_start:
            return _Series(p)
        group = self._peers.setdefault((device.tenant, device.zone, device.kind, metric), [])
        # The oldest peers past their warm-up (a bounded sample); the one whose recent median
        # is the median of theirs lends its baseline.
        ready = [(k, self.series_[k]) for k in group[:_PEER_SAMPLE]]
        ready = [(k, s) for k, s in ready if len(s.recent) >= p.warmup]
        group.append((device, metric))
        if len(ready) < p.peer_min:
            return _Series(p)
        ready.sort(key=lambda ks: _median(ks[1].recent))
        (peer, _), lender = ready[len(ready) // 2]
        return lender.seeded(p, peer.device_id)

    def _index_peers(self) -> None:
        self._peers = {}
        if self.params.peer_cold_start:
            for device, metric in self.series_:
                key = (device.tenant, device.zone, device.kind, metric)
                self._peers.setdefault(key, []).append((device, metric))

    def _decide_one(
        self, series: _Series, ev: _Eval, record: Record, metric: str, x: float
    ) -> Verdict:
        p = self.params
        floor = p.absolute_floor.get(metric, 0.0)
        flagged = ev.score >= p.threshold and abs(x - ev.expected) >= floor
        suppressed = record.ts < series.quiet_until
        change: Change | None = None
        reason = _reason(ev, x, p.band) if flagged else ""
        if flagged and not suppressed:
            series.quiet_until = record.ts + p.quiet_seconds
            if not series.firing:
                series.firing = True
                change = "raise"
        adopted = False
        if flagged:
            series.clear_run = 0
            if ev.baseline == "range":
                sign = 1 if x > ev.hi else -1
            else:
                sign = 1 if x >= ev.expected else -1
            if sign != series.shift_sign:
                series.shift_run, series.shift_sign = [], sign
            series.shift_run.append(x)
            if len(series.shift_run) >= p.shift_after and not series.hold_level:
                delta = series.adopt(p, record.ts)
                adopted = True
                reason = f"level shift of {delta:+g} adopted as the new normal"
                if series.firing and change is None:
                    series.firing = False
                    change = "clear"
        else:
            series.shift_run, series.shift_sign = [], 0
            if series.firing:
                series.clear_run += 1
                if series.clear_run >= p.clear_after:
                    series.firing = False
                    series.clear_run = 0
                    series.hold_level = False  # back to normal: a later shift may be adopted
                    change = "clear"
        series.learn(p, ev, x, baseline=(not flagged or p.learn_flagged) and not adopted)
        low, high = self._expected_range(ev)
        return Verdict(
            device=record.device,
            ts=record.ts,
            metric=metric,
            value=x,
            score=ev.score,
            anomalous=flagged,
            expected=ev.expected,
            expected_low=low,
            expected_high=high,
            baseline=self._baseline_name(ev, series),
            reason=reason,
            change=change,
            suppressed=suppressed,
        )

    def _expected_range(self, ev: _Eval) -> tuple[float, float]:
        if ev.baseline == "range":
            return ev.lo, ev.hi
        half = self.params.band * ev.scale
        return ev.expected - half, ev.expected + half

    def _baseline_name(self, ev: _Eval, series: _Series) -> str:
        name = self._baseline_kind(ev)
        if series.seeded_from and ev.baseline != "warmup":
            name += f" (cold start from peer {series.seeded_from})"
        return name

    def _baseline_kind(self, ev: _Eval) -> str:
        p = self.params
        if ev.baseline == "season" and ev.slot >= p.buckets:  # the day fallback
            minutes = (ev.slot - p.buckets) * p.bucket_minutes
            return f"hour-of-day {minutes // 60:02d}:{minutes % 60:02d}"
        if ev.baseline == "season":
            return f"{p.season.replace('_', '-')} {_bucket_name(p, ev.bucket)}"
        if ev.baseline == "recent":
            return f"median of the last {p.recent_size} values"
        if ev.baseline == "range":
            if p.range_points is not None:
                return f"range of about the last {p.range_points} values"
            return "range ever seen"
        return "warming up"


def _reason(ev: _Eval, x: float, band: float) -> str:
    above = x > ev.expected
    if ev.baseline == "range":
        return "above anything seen" if above else "below anything seen"
    if abs(x - ev.expected) <= band * ev.scale:
        # In range now, but the average distance of the last points is unusual.
        return "sustained deviation"
    if ev.baseline == "season":
        return "high for this time" if above else "low for this time"
    return "spike" if above else "dip"


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    x = float(value)
    return x if math.isfinite(x) else None
