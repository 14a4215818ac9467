"""`sentinel backtest`: a detector configuration tried on history, against a baseline.

Telemetry history is read from InfluxDB (sentinel.backtest_source) in time order and fed, in
simulated time, to one `Pipeline` per configuration, built as `sentinel eval` builds it
(`build_pipeline`: the agent's engine and alert book, nothing stored or notified). The alerts
of both are counted per day, compared (sentinel.backtest_compare: gained and lost), and, with a
ground truth, scored as `sentinel eval` scores them (recall, precision).

Detectors start empty at `since`, as after a first start of the agent without a checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp

from detectors.model import Record
from sentinel.alerting.alerts import Alert
from sentinel.backtest_compare import (
    DEFAULT_TOLERANCE_S,
    Comparison,
    FiredAlert,
    compare,
    days_between,
    per_day,
)
from sentinel.backtest_source import BacktestError, InfluxHistory, InfluxSource, ReadStats
from sentinel.config import Config, load_config
from sentinel.errors import ConfigError
from sentinel.evaluation.runner import build_pipeline
from sentinel.evaluation.scoring import DEFAULT_GRACE_S, RunOutcome, Score, score
from sentinel.pipeline import Pipeline
from simulators.anomalies import GroundTruth, read_truth
from simulators.scenario import ScenarioError, load_scenario, parse_duration
from simulators.scenario_run import prepare

__all__ = ["BacktestError", "BacktestOptions", "BacktestResult", "run_backtest"]

DEFAULT_CONFIG = Path("deploy/sentinel.toml")  # what `sentinel run` uses without --config
DEFAULT_MAX_ALERTS = 100_000

Progress = Callable[[float], None]  # fraction of the window read


def default_baseline() -> Path:
    """The configuration the agent runs by default: $SENTINEL_CONFIG, else deploy/sentinel.toml
    (both relative to the current directory, as for `sentinel run`)."""
    env = os.environ.get("SENTINEL_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


def zone_info(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BacktestError(f"--tz: unknown time zone {name!r} (e.g. UTC, Europe/Paris)") from None


def parse_when(text: str, now: float, tz: tzinfo, what: str = "time") -> float:
    """`now`, a duration ago (`7d`, `36h`, `2h30m`), or an ISO date-time (naive: in `tz`)."""
    t = text.strip()
    if t.lower() == "now":
        return now
    if any(c in t for c in "-:T"):  # durations have none of these
        try:
            when = datetime.fromisoformat(t)
        except ValueError:
            raise BacktestError(f"{what}: {text!r} is not an ISO date-time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=tz)
        return when.timestamp()
    try:
        return now - parse_duration(t)
    except ValueError:
        raise BacktestError(
            f"{what}: {text!r} is neither 'now', a duration such as 7d or 36h, nor an ISO date-time"
        ) from None


@dataclass(frozen=True)
class ScenarioTruth:
    """The ground truth of a simulated scenario, rebuilt from the options it was run with."""

    scenario: str
    seed: int | None = None
    devices: int | None = None
    days: float | None = None
    start: float | None = None


@dataclass(frozen=True)
class BacktestOptions:
    config: Path
    baseline: Path
    since: float
    until: float
    tz_name: str = "UTC"
    tenant: str | None = None
    zone: str | None = None
    truth_file: Path | None = None
    scenario: ScenarioTruth | None = None
    tolerance_s: float = DEFAULT_TOLERANCE_S
    grace_s: float = DEFAULT_GRACE_S
    window_s: float = 6 * 3600.0
    chunk_size: int = 2000
    max_alerts: int = DEFAULT_MAX_ALERTS
    influx_url: str | None = None
    database: str | None = None
    username: str | None = None
    password_file: Path | None = None

    def check(self) -> None:
        problems = []
        if not self.since < self.until:
            problems.append("--since must be before --until")
        if not (math.isfinite(self.window_s) and self.window_s >= 1):
            problems.append("--window must be at least 1 s")
        if not (math.isfinite(self.tolerance_s) and self.tolerance_s >= 0):
            problems.append("--tolerance must be >= 0")
        if not (math.isfinite(self.grace_s) and self.grace_s >= 0):
            problems.append("--grace must be >= 0")
        if self.truth_file is not None and self.scenario is not None:
            problems.append("give --truth or --scenario, not both")
        if problems:
            raise BacktestError("; ".join(problems))


def _load(path: Path, role: str) -> Config:
    if not path.exists():
        hint = " (pass --baseline FILE)" if role == "baseline" else ""
        raise BacktestError(f"{role} configuration {path} does not exist{hint}")
    try:
        return load_config(path)
    except ConfigError as exc:
        raise BacktestError(f"{role} configuration: {exc}") from None


def influx_source(cfg: Config, opts: BacktestOptions) -> InfluxSource:
    """The NEW configuration's [influxdb] section, with the command line's overrides."""
    ic = cfg.influxdb
    password = ic.secret()
    if opts.password_file is not None:
        try:
            password = opts.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise BacktestError(
                f"--password-file: cannot read {opts.password_file}: {exc.strerror}"
            ) from None
    return InfluxSource(
        url=opts.influx_url or ic.url,
        database=opts.database or ic.database,
        username=opts.username if opts.username is not None else ic.username,
        password=password,
        timeout_s=max(ic.timeout_s, 30.0),
        tenant=opts.tenant,
        zone=opts.zone,
    )


def load_truth(opts: BacktestOptions) -> tuple[str, list[GroundTruth]] | None:
    if opts.truth_file is not None:
        try:
            return str(opts.truth_file), read_truth(opts.truth_file)
        except OSError as exc:
            raise BacktestError(f"--truth: cannot read {opts.truth_file}: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise BacktestError(f"--truth: {opts.truth_file}: not ground truth ({exc})") from None
    if opts.scenario is not None:
        s = opts.scenario
        try:
            sc = load_scenario(s.scenario)
        except ScenarioError as exc:
            raise BacktestError(f"--scenario: {exc}") from None
        run = prepare(sc, devices=s.devices, days=s.days, seed=s.seed, start=s.start)
        return f"scenario {sc.name} (seed {run.seed})", list(run.truth)
    return None


def truth_in_scope(
    truth: Sequence[GroundTruth],
    since: float,
    until: float,
    tenant: str | None = None,
    zone: str | None = None,
) -> list[GroundTruth]:
    """The events the backtest can see: overlapping the window, and in the tenant and zone
    asked for (an event without zones is kept)."""

    def in_filter(z: str) -> bool:
        t, _, zn = z.partition("/")
        return (tenant is None or t == tenant) and (zone is None or zn == zone)

    return [
        e
        for e in truth
        if e.start < until
        and e.end >= since
        and (not e.zones or any(in_filter(z) for z in e.zones))
    ]


@dataclass
class Lane:
    """One configuration replayed: its pipeline and every alert it raised."""

    label: str
    path: Path
    cfg: Config
    pipeline: Pipeline
    max_alerts: int
    raised: dict[int, Alert] = field(default_factory=dict)
    refused: int = 0  # records of device ids beyond validation.max_devices

    @classmethod
    def build(cls, label: str, path: Path, cfg: Config, max_alerts: int) -> Lane:
        return cls(label, path, cfg, build_pipeline(cfg), max_alerts)

    def feed(self, records: Sequence[Record]) -> None:
        admission = self.pipeline.admission
        admitted = [r for r in records if admission.admit(r.device.device_id)]
        self.refused += len(records) - len(admitted)
        step = self.cfg.pipeline.batch_max
        engine, book = self.pipeline.engine, self.pipeline.book
        for k in range(0, len(admitted), step):
            # Pipeline.ingest without its store: formatting lines nobody keeps would cost a
            # third of the run.
            for source, transitions in engine.process(admitted[k : k + step]):
                for a in book.apply(source, transitions):
                    self.raised.setdefault(id(a), a)  # the same object again when it resolves
            if len(self.raised) > self.max_alerts:
                raise BacktestError(
                    f"the {self.label} configuration ({self.path}) raised more than "
                    f"{self.max_alerts:,} alerts: narrow the window or the tenant/zone, "
                    "or raise --max-alerts"
                )

    def alerts(self) -> list[FiredAlert]:
        return sorted(
            (FiredAlert.of(a) for a in self.raised.values()),
            key=lambda a: (a.start, a.detector, a.device),
        )


@dataclass
class LaneResult:
    label: str
    path: Path
    detectors: list[str]
    alerts: list[FiredAlert]
    refused: int
    score: Score | None = None


@dataclass
class BacktestResult:
    since: float
    until: float
    tz_name: str
    source: InfluxSource
    kinds: tuple[str, ...]
    read: ReadStats
    records: int
    devices: int
    new: LaneResult
    baseline: LaneResult
    comparison: Comparison
    truth_label: str | None = None
    truth_events: list[GroundTruth] = field(default_factory=list)
    truth_total: int = 0
    grace_s: float = DEFAULT_GRACE_S
    wall_s: float = 0.0

    @property
    def lanes(self) -> tuple[LaneResult, LaneResult]:
        return self.new, self.baseline

    def days(self) -> list[str]:
        tz = zone_info(self.tz_name)
        return [d.isoformat() for d in days_between(self.since, self.until, tz)]

    def per_day(self, lane: LaneResult) -> dict[str, dict[str, int]]:
        tz = zone_info(self.tz_name)
        counts = per_day(lane.alerts, days_between(self.since, self.until, tz), tz)
        return {day: dict(sorted(c.items())) for day, c in counts.items()}

    def to_dict(self) -> dict[str, Any]:
        def iso(ts: float) -> str:
            return datetime.fromtimestamp(ts, UTC).isoformat()

        def lane(r: LaneResult) -> dict[str, Any]:
            by_detector: dict[str, int] = {}
            for a in r.alerts:
                by_detector[a.detector] = by_detector.get(a.detector, 0) + 1
            return {
                "config": str(r.path),
                "detectors": r.detectors,
                "alerts": len(r.alerts),
                "alerts_by_detector": dict(sorted(by_detector.items())),
                "alerts_per_day": self.per_day(r),
                "records_beyond_device_cap": r.refused,
                "score": r.score.to_dict() if r.score is not None else None,
                "alert_list": [a.to_dict() for a in r.alerts],
            }

        src = self.source
        return {
            "window": {
                "since": iso(self.since),
                "until": iso(self.until),
                "since_ts": self.since,
                "until_ts": self.until,
                "days": round((self.until - self.since) / 86_400.0, 6),
                "tz": self.tz_name,
            },
            "source": {
                "url": src.url,
                "database": src.database,
                "measurements": list(self.kinds),
                "tenant": src.tenant,
                "zone": src.zone,
            },
            "read": {
                "rows": self.read.rows,
                "records": self.records,
                "devices": self.devices,
                "skipped_rows": dict(sorted(self.read.skipped.items())),
                "queries": self.read.queries,
                "wall_s": round(self.wall_s, 3),
            },
            "new": lane(self.new),
            "baseline": lane(self.baseline),
            "comparison": self.comparison.to_dict(),
            "truth": None
            if self.truth_label is None
            else {
                "source": self.truth_label,
                "events_total": self.truth_total,
                "events_in_scope": [t.to_dict() for t in self.truth_events],
                "grace_s": self.grace_s,
            },
        }


async def run_backtest(opts: BacktestOptions, progress: Progress | None = None) -> BacktestResult:
    """Read the window once, feed both configurations, compare and score."""
    opts.check()
    began = time.perf_counter()
    new_cfg = _load(opts.config, "new")
    base_cfg = _load(opts.baseline, "baseline")
    truth = load_truth(opts)
    source = influx_source(new_cfg, opts)
    kinds = new_cfg.validation.kinds
    lanes = (
        Lane.build("new", opts.config, new_cfg, opts.max_alerts),
        Lane.build("baseline", opts.baseline, base_cfg, opts.max_alerts),
    )
    since_ms, until_ms = math.floor(opts.since * 1000), math.ceil(opts.until * 1000)
    records = 0
    async with aiohttp.ClientSession() as session:
        history = InfluxHistory(
            session,
            source,
            kinds,
            chunk_size=opts.chunk_size,
            max_metrics=max(new_cfg.validation.max_metrics, base_cfg.validation.max_metrics),
        )
        window_ms = max(1000, round(opts.window_s * 1000))
        reading = history.records(since_ms, until_ms, window_ms)
        async with contextlib.aclosing(reading):  # its queries end with it, even on errors
            async for window_end, batch in reading:
                records += len(batch)
                for lane in lanes:
                    lane.feed(batch)
                if progress is not None and not batch:
                    progress((window_end - since_ms) / (until_ms - since_ms))
    if records == 0:
        where = source.describe()
        skipped = sum(history.stats.skipped.values())
        extra = f" ({skipped:,} unreadable rows skipped)" if skipped else ""
        raise BacktestError(
            f"no telemetry ({', '.join(kinds)}) in {where} between "
            f"{datetime.fromtimestamp(opts.since, UTC):%Y-%m-%d %H:%M:%S} and "
            f"{datetime.fromtimestamp(opts.until, UTC):%Y-%m-%d %H:%M:%S} UTC{extra}"
        )
    results = [
        LaneResult(
            lane.label,
            lane.path,
            [d.name for d in lane.cfg.detectors if d.enabled],
            lane.alerts(),
            lane.refused,
        )
        for lane in lanes
    ]
    new, base = results
    devices = len(lanes[0].pipeline.admission.known)
    result = BacktestResult(
        since=opts.since,
        until=opts.until,
        tz_name=opts.tz_name,
        source=source,
        kinds=tuple(kinds),
        read=history.stats,
        records=records,
        devices=devices,
        new=new,
        baseline=base,
        comparison=compare(
            new.alerts, base.alerts, horizon=opts.until, tolerance_s=opts.tolerance_s
        ),
        grace_s=opts.grace_s,
    )
    if truth is not None:
        label, events = truth
        scoped = truth_in_scope(events, opts.since, opts.until, opts.tenant, opts.zone)
        result.truth_label, result.truth_events, result.truth_total = label, scoped, len(events)
        for r in results:
            outcome = RunOutcome(
                "backtest", scoped, [a.record() for a in r.alerts], devices, opts.until - opts.since
            )
            r.score = score([outcome], grace_s=opts.grace_s)
    result.wall_s = time.perf_counter() - began
    return result
