"""Scenario runs through the agent's own pipeline, in simulated time.

Each run builds the fleet, compiles the scenario, generates the message stream and feeds it, in
micro-batches, to `sentinel.pipeline.Pipeline` (decode, validate, store, detectors, alert book:
the code the live agent runs) with `now` = the simulated time of the batch. Nothing goes to a
broker or a database: the store only counts.

`workers > 1` splits the fleet by tenant over at most that many processes (each simulates its
tenants and runs its own pipeline). Devices are simulated independently of each other, so every
device's messages, and the alerts of any detector that stays within a tenant (all of them: peer
groups fall back to the tenant, fleet incidents gather a tenant's zones), are the same as with
one worker. A run has no more useful workers than tenants, and a big tenant sets the pace.

The run's broker events (refused logins, subscriptions, client id takeovers: what the scenario's
MQTT-layer actions did) go, in stream order, through the agent's traffic analyzer and alert
bridge (`sentinel.evaluation.broker`) into the same alert book. A broker is one stream whatever
the zones (a brute force tries devices of several zones), so with `workers > 1` all of them go
to worker 0, whose book gets every traffic alert.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing as mp
import queue
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentinel.agent import build_decoder
from sentinel.alerting.alerts import Alert
from sentinel.alerting.build import build_book
from sentinel.config import Config
from sentinel.deadletter import DeadLetters
from sentinel.engine import Engine, build_instances
from sentinel.evaluation.broker import BrokerTraffic, fleet_inventory
from sentinel.evaluation.scoring import AlertRecord, RunOutcome
from sentinel.metrics import Metrics
from sentinel.pipeline import Pipeline
from sentinel.traffic.inventory import load_inventory
from sentinel.traffic.live import TRAFFIC_KIND
from simulators.anomalies import GroundTruth
from simulators.effects import BrokerAction, StreamPlan
from simulators.fleet import Device, Fleet
from simulators.generator import generate
from simulators.messages import Run
from simulators.recordfile import BrokerEvent, open_recording
from simulators.scenario import Scenario
from simulators.scenario_run import ScenarioRun, prepare, with_events

Progress = Callable[[int], None]
_PROGRESS_EVERY = 20_000


def build_pipeline(cfg: Config) -> Pipeline:
    metrics = Metrics()
    return Pipeline(
        decoder=build_decoder(cfg),
        store=None,  # eval keeps no points: no line protocol is even formatted
        engine=Engine(build_instances(cfg.detectors)),
        book=build_book(cfg, metrics),
        notifiers=[],
        metrics=metrics,
        deadletters=DeadLetters(cfg.deadletter.capacity),
        max_devices=cfg.validation.max_devices,
    )


_NAME_KEYS = ("subject", "username", "client_id")


def alert_names(a: Alert) -> tuple[str, ...]:
    """The identities a traffic alert without a device names (its evidence): the scoring rule
    matches them against an event's devices."""
    if a.device.kind != TRAFFIC_KIND:
        return ()
    ev = a.evidence
    names = {str(ev[k]) for k in _NAME_KEYS if isinstance(ev.get(k), str)}
    tried = ev.get("usernames")  # a brute force's sample: "a,b,c (+4)"
    if isinstance(tried, str):
        names.update(u for u in tried.split(" (+", 1)[0].split(",") if u and u != "-")
    return tuple(sorted(names))


def _record(a: Alert) -> AlertRecord:
    return AlertRecord(
        detector=a.source.name,
        device_id=a.device.device_id,
        start=a.starts_at,
        end=a.ends_at,
        severity=a.source.severity,
        summary=a.summary,
        names=alert_names(a),
    )


@dataclass
class FeedResult:
    alerts: list[AlertRecord]
    messages: int
    rejected: Counter[str]
    broker_events: int = 0


# A message: (ts, topic, payload); plain reports the simulator handed over as columns
# (simulators.messages.Run); or a broker event.
Item = tuple[float, str, bytes] | Run | BrokerEvent


async def feed(
    pipeline: Pipeline,
    items: Iterable[Item],
    batch_max: int,
    progress: Progress | None = None,
    traffic: BrokerTraffic | None = None,
) -> FeedResult:
    """Feed (ts, topic, payload) in order, `batch_max` at a time, `now` = the batch's last ts.

    A broker event first flushes the batch before it (stream order), then goes to `traffic`,
    whose alert transitions enter the book at once; while traffic alerts fire, each batch also
    advances the bridge's clock (they resolve after `resolve_after_s` of simulated quiet).
    Without `traffic`, broker events are only counted.

    Every alert the book raised is kept (the book's own history is bounded), with its end
    filled in when it resolved.
    """
    raised: dict[int, Alert] = {}
    batch: list[tuple[str, bytes] | Run] = []
    size = n = events = 0  # size: messages in `batch` (a run holds several)
    now = 0.0
    next_report = _PROGRESS_EVERY

    def keep(alerts: list[Alert]) -> None:
        for a in alerts:
            raised.setdefault(id(a), a)

    async def flush() -> None:
        nonlocal batch, n, size
        keep(await pipeline.process(batch, now))
        n += size
        batch, size = [], 0
        if traffic is not None and traffic.active:
            keep(await traffic.deliver(pipeline, now))

    gc_was_enabled = gc.isenabled()
    gc.disable()  # the stream makes no reference cycles; the collector's passes cost ~10 %
    try:
        for item in items:
            if isinstance(item, BrokerEvent):
                events += 1
                if traffic is None:
                    continue
                if batch:
                    await flush()
                now = max(now, item.ts)
                traffic.add(item.ts, item.event)
                keep(await traffic.deliver(pipeline, now))
                continue
            for part in _cut(item, batch_max - size, batch_max):
                batch.append(part if isinstance(part, Run) else part[1:])
                size += len(part) if isinstance(part, Run) else 1
                now = float(part.sent[-1]) if isinstance(part, Run) else part[0]
                if size >= batch_max:
                    await flush()
                    if progress is not None and n >= next_report:
                        progress(n)
                        next_report = n + _PROGRESS_EVERY
        if batch:
            await flush()
    finally:
        if gc_was_enabled:
            gc.enable()
    if progress is not None:
        progress(n)
    # What a SOC would have been shown: not what was suppressed, nor observe-only detectors'.
    shown = [a for a in raised.values() if not a.observed and not a.suppressed_by]
    return FeedResult([_record(a) for a in shown], n, Counter(pipeline.rejected), events)


def _cut(
    item: tuple[float, str, bytes] | Run, room: int, batch_max: int
) -> Iterator[tuple[float, str, bytes] | Run]:
    """A run cut where batches end (`room` messages left in the current one): batches hold
    `batch_max` messages whether reports come one by one or in runs."""
    if not isinstance(item, Run) or len(item) <= room:
        yield item
        return
    head, rest = item.split(room)
    yield head
    while len(rest) > batch_max:
        head, rest = rest.split(batch_max)
        yield head
    yield rest


@dataclass
class RunResult:
    """One scenario run, scored later."""

    name: str
    devices: int
    seed: int
    start: float
    end: float
    messages: int
    rejected: Counter[str]
    broker_events: int
    truth: tuple[GroundTruth, ...]
    alerts: list[AlertRecord]
    skipped: tuple[str, ...] = ()
    wall_s: float = 0.0
    workers: int = 1
    source: str = "simulator"
    detectors: list[str] = field(default_factory=list)

    @property
    def span_s(self) -> float:
        return self.end - self.start

    def outcome(self) -> RunOutcome:
        return RunOutcome(self.name, self.truth, self.alerts, self.devices, self.span_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "devices": self.devices,
            "seed": self.seed,
            "start": self.start,
            "end": self.end,
            "days": round(self.span_s / 86_400.0, 6),
            "messages": self.messages,
            "rejected": {str(k): v for k, v in self.rejected.items()},
            "broker_events": self.broker_events,
            "wall_s": round(self.wall_s, 3),
            "workers": self.workers,
            "detectors": self.detectors,
            "skipped_events": list(self.skipped),
            "truth": [t.to_dict() for t in self.truth],
            "alerts": [a.to_dict() for a in self.alerts],
        }


def expected_messages(fleet: Fleet, span_s: float) -> int:
    """About how many messages a run makes (for progress bars)."""
    return len(fleet) + int(sum(span_s / d.cadence_s for d in fleet))


def shard_tenants(devices: Sequence[Device], workers: int) -> list[set[str]]:
    """Whole tenants, split over at most `workers` with about equal message rates (greedy,
    biggest first). Whole: peer groups fall back to the tenant's devices, and fleet incidents
    gather a tenant's zones; both must see all of a tenant."""
    load: defaultdict[str, float] = defaultdict(float)
    for d in devices:
        load[d.tenant] += 1.0 / d.cadence_s
    shards: list[set[str]] = [set() for _ in range(workers)]
    totals = [0.0] * workers
    for tenant, rate in sorted(load.items(), key=lambda kv: (-kv[1], kv[0])):
        i = totals.index(min(totals))
        shards[i].add(tenant)
        totals[i] += rate
    return [s for s in shards if s]


def _shard(run: ScenarioRun, tenants: set[str]) -> tuple[Fleet, StreamPlan]:
    def mine(d: Device) -> bool:
        return d.tenant in tenants

    fleet = Fleet(tuple(d for d in run.fleet if mine(d)))
    plan = run.compiled.plan
    extra = tuple(d for d in plan.extra_devices if mine(d))
    ids = {d.device_id for d in fleet} | {d.device_id for d in extra}
    return fleet, StreamPlan(
        effects={k: v for k, v in plan.effects.items() if k in ids},
        scheduled=tuple(m for m in plan.scheduled if m.device_id in ids),
        extra_devices=extra,
        unannounced=frozenset(plan.unannounced & ids),
    )


def stream_items(
    run: ScenarioRun,
    fleet: Fleet | None = None,
    plan: StreamPlan | None = None,
    *,
    broker: bool = True,
    wire: bool = False,
) -> Iterator[Item]:
    """What eval feeds the pipeline for `fleet` under `plan` (default: the run's): messages
    and, with `broker`, the run's broker events, in stream order. Plain reports come decoded
    unless `wire` (see `run_scenario`)."""
    messages = generate(
        run.fleet if fleet is None else fleet,
        run.start,
        run.end,
        None,
        run.seed,
        topic_prefix=run.prefix,
        plan=run.compiled.plan if plan is None else plan,
        decoded=not wire,
    )
    actions = run.compiled.plan.actions if broker else ()
    for m in with_events(messages, actions):
        if isinstance(m, Run):
            yield m
        elif isinstance(m, BrokerAction):
            for ev in m.events():
                yield BrokerEvent(m.ts, ev)
        else:
            yield m.ts, m.topic, m.payload


def _simulate(
    run: ScenarioRun,
    fleet: Fleet,
    plan: StreamPlan,
    cfg: Config,
    progress: Progress | None,
    broker: bool = True,
    wire: bool = False,
) -> FeedResult:
    """`broker`: this process gets the run's broker events (see the module's docstring)."""
    items = stream_items(run, fleet, plan, broker=broker, wire=wire)
    traffic = BrokerTraffic(cfg.traffic, fleet_inventory(run.fleet)) if broker else None
    return asyncio.run(feed(build_pipeline(cfg), items, cfg.pipeline.batch_max, progress, traffic))


def _worker(
    run: ScenarioRun,
    tenants: set[str],
    cfg: Config,
    index: int,
    progress: Any,
    results: Any,
    wire: bool,
) -> None:
    fleet, plan = _shard(run, tenants)
    out = _simulate(
        run, fleet, plan, cfg, lambda n: progress.put((index, n)), broker=index == 0, wire=wire
    )
    results.put((index, out))


def run_scenario(
    scenario: Scenario,
    cfg: Config,
    *,
    devices: int | None = None,
    days: float | None = None,
    seed: int | None = None,
    start: float | None = None,
    workers: int = 1,
    progress: Progress | None = None,
    wire: bool = False,
) -> RunResult:
    """Simulate the scenario and run it through the pipeline; the alerts and the truth.

    Plain reports (of devices no effect targets) reach the pipeline already decoded: the
    Records the decoder makes of their payloads (tests prove it, message by message), without
    the JSON round trip. `wire` writes and decodes every one of them instead (slower; the same
    alerts)."""
    began = time.perf_counter()
    run = prepare(scenario, devices=devices, days=days, seed=seed, start=start)
    if workers <= 1:
        out = _simulate(run, run.fleet, run.compiled.plan, cfg, progress, wire=wire)
    else:
        out = _sharded(run, cfg, workers, progress, wire)
    return RunResult(
        name=scenario.name,
        devices=len(run.fleet),
        seed=run.seed,
        start=run.start,
        end=run.end,
        messages=out.messages,
        rejected=out.rejected,
        broker_events=out.broker_events,
        truth=run.truth,
        alerts=sorted(out.alerts, key=lambda a: (a.start, a.device_id, a.detector)),
        skipped=run.compiled.skipped,
        wall_s=time.perf_counter() - began,
        workers=max(workers, 1),
        detectors=[d.name for d in cfg.detectors if d.enabled],
    )


def _sharded(
    run: ScenarioRun, cfg: Config, workers: int, progress: Progress | None, wire: bool
) -> FeedResult:
    ctx = mp.get_context("fork")
    progress_q = ctx.Queue()
    results_q = ctx.Queue()
    shards = shard_tenants([*run.fleet, *run.compiled.plan.extra_devices], workers)
    procs = [
        ctx.Process(
            target=_worker,
            args=(run, tenants, cfg, i, progress_q, results_q, wire),
            name=f"eval-{i}",
        )
        for i, tenants in enumerate(shards)
    ]
    for p in procs:
        p.start()
    done: dict[int, FeedResult] = {}
    counts = [0] * len(procs)
    try:
        while len(done) < len(procs):
            while not progress_q.empty():
                i, n = progress_q.get_nowait()
                counts[i] = n
            if progress is not None:
                progress(sum(counts))
            try:
                i, out = results_q.get(timeout=0.2)
                done[i] = out
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):
                    raise RuntimeError("an eval worker failed") from None
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
    alerts = [a for i in sorted(done) for a in done[i].alerts]
    rejected: Counter[str] = Counter()
    for out in done.values():
        rejected.update(out.rejected)
    return FeedResult(
        alerts,
        sum(o.messages for o in done.values()),
        rejected,
        sum(o.broker_events for o in done.values()),
    )


def run_recording(
    path: Path, truth: Sequence[GroundTruth], cfg: Config, progress: Progress | None = None
) -> RunResult:
    """Run a recording file (recorded live, or written by the simulator) through the pipeline,
    `now` = each entry's recorded time; score it against `truth`. Its broker events go through
    the traffic analysis, with the devices of `traffic.inventory_file` when the config names
    one."""
    began = time.perf_counter()
    rec = open_recording(path)
    first = last = None
    devices: set[str] = set()

    def items() -> Iterable[Item]:
        nonlocal first, last
        for e in rec.entries():
            if isinstance(e, BrokerEvent):
                yield e
                continue
            first = e.ts if first is None else first
            last = e.ts
            levels = e.topic.split("/")
            if len(levels) >= 2:
                devices.add(levels[-2])
            yield e.ts, e.topic, e.payload

    inventory = cfg.traffic.inventory_file
    traffic = BrokerTraffic(cfg.traffic, load_inventory(inventory) if inventory else None)
    pipeline = build_pipeline(cfg)
    out = asyncio.run(feed(pipeline, items(), cfg.pipeline.batch_max, progress, traffic))
    meta = rec.meta
    start = float(meta.get("start", first or 0.0))
    end = float(meta.get("end", last or start))
    return RunResult(
        name=str(meta.get("scenario") or path.name),
        devices=int(meta.get("devices", len(devices))),
        seed=int(meta.get("seed", 0)),
        start=start,
        end=end,
        messages=out.messages,
        rejected=out.rejected,
        broker_events=out.broker_events,
        truth=tuple(truth),
        alerts=sorted(out.alerts, key=lambda a: (a.start, a.device_id, a.detector)),
        wall_s=time.perf_counter() - began,
        source=str(path),
        detectors=[d.name for d in cfg.detectors if d.enabled],
    )
