"""The fleet's message stream over a span of simulated time, in time order.

Reports are made batch by batch: the schedule says who reports when, each sub-type's model computes
the batch's metrics as numpy columns, and only the JSON encoding runs per message. Memory stays
bounded by the batch size whatever the fleet size or the span.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from simulators import network, noise, sun
from simulators.anomalies import Anomaly, AnomalySpec, Metrics
from simulators.effects import EMPTY_PLAN, Effect, LegacyAnomaly, Report, StreamPlan
from simulators.fleet import Device, Fleet
from simulators.messages import DEFAULT_TOPIC_PREFIX, Message, check_prefix, online, topic
from simulators.schedule import Schedule
from simulators.telemetry import TelemetryModel, model_for

# Reports per batch: large enough to amortise numpy calls, small enough to stay in cache.
BATCH_SIZE = 20_000
MISSING_RATE = 0.005
# Device clocks drift a little from true time.
CLOCK_JITTER_S = 0.15
CLOCK_JITTER_MAX_S = 0.5
# Simulated time must stay inside the sun tables (2000-01-02 .. 2099-12-30).
EARLIEST_TS = (sun.FIRST_DAY + 1) * sun.DAY_S
LATEST_TS = (sun.LAST_DAY - 2) * sun.DAY_S

# Random streams of the report itself (the models number theirs from 1 upwards).
_MISSING_STREAM = 1_000
_JITTER_STREAM = 1_001


@dataclass(frozen=True, slots=True)
class _Batch:
    """Reports due in one window, in time order (parallel arrays)."""

    devices: np.ndarray  # fleet index
    times_ms: np.ndarray  # when sent, simulated
    report: np.ndarray  # the device's report number since the epoch
    device_ts: np.ndarray  # payload ts: the device's clock, jittered
    seq: np.ndarray


@dataclass(frozen=True, slots=True)
class _Group:
    """The devices of one sub-type and their model."""

    model: TelemetryModel
    devices: tuple[Device, ...]
    kind: str
    infos: tuple[dict[str, str], ...]

    def encode(
        self,
        batch: _Batch,
        at: np.ndarray,
        rows: np.ndarray,
        targets: _Targets,
        out: list[bytes | None],
        extras: dict[int, list[bytes]],
    ) -> None:
        """JSON payloads of this group's reports at batch positions `at`, written into `out`
        (None for a report an effect dropped); messages an effect adds go to `extras`."""
        t = batch.times_ms[at] / 1000.0
        report = batch.report[at]
        columns = self.model.metrics(rows, t, report)
        columns.update(network.columns(self.kind, self.model, rows, report, columns))
        names = list(columns)
        values = zip(*(c.tolist() for c in columns.values()), strict=True)
        attacked = set(at[np.isin(batch.devices[at], targets.indices)].tolist())
        dumps = orjson.dumps
        infos = self.infos
        for pos, row, ts, seq, vals in zip(
            at.tolist(),
            rows.tolist(),
            batch.device_ts[at].tolist(),
            batch.seq[at].tolist(),
            values,
            strict=True,
        ):
            metrics: Metrics = dict(zip(names, vals, strict=True))
            if pos in attacked:
                out[pos] = targets.apply(
                    self.devices[row], ts, seq, metrics, infos[row], pos, extras
                )
                continue
            out[pos] = dumps(
                {
                    "device_id": self.devices[row].device_id,
                    "ts": ts,
                    "seq": seq,
                    "metrics": metrics,
                    "info": infos[row],
                }
            )


@dataclass(frozen=True, slots=True)
class _Targets:
    """The effects by target device, the fleet indices of those devices, and their history."""

    by_device: Mapping[str, tuple[Effect, ...]]
    indices: np.ndarray
    history: dict[str, deque[bytes]]

    def apply(
        self,
        device: Device,
        ts: float,
        seq: int,
        metrics: Metrics,
        info: dict[str, str],
        pos: int,
        extras: dict[int, list[bytes]],
    ) -> bytes | None:
        history = self.history.get(device.device_id)
        report = Report(device, ts, seq, metrics, info, history=history)
        for effect in self.by_device.get(device.device_id, ()):
            if effect.applies(ts):
                effect.apply(report)
        if report.extras:
            extras[pos] = report.extras
        if report.drop:
            return None
        payload = report.payload()
        if history is not None:
            history.append(payload)
        return payload


def generate(
    fleet: Fleet,
    start_ts: float,
    end_ts: float,
    anomalies: Sequence[AnomalySpec | Anomaly] | None = None,
    seed: int = 0,
    *,
    topic_prefix: str = DEFAULT_TOPIC_PREFIX,
    plan: StreamPlan | None = None,
) -> Iterator[Message]:
    """Every message the fleet publishes in [start_ts, end_ts), sorted by `Message.ts`.

    First each device's retained `online` status at `start_ts`, then its telemetry every
    `cadence_s` from its phase on. A report is occasionally missing (its `seq` is then skipped,
    as if lost on the way) and payload `ts` carries a few hundred ms of clock jitter. The same
    fleet, span, anomalies, plan and seed always give byte-identical messages.

    `plan` (a compiled scenario, see `simulators.scenario`) adds effects on devices' reports,
    scheduled messages, and devices outside the fleet; its messages must use `topic_prefix`.
    """
    if not (math.isfinite(start_ts) and math.isfinite(end_ts) and start_ts <= end_ts):
        raise ValueError(f"need finite start_ts <= end_ts, got {start_ts}, {end_ts}")
    if start_ts < EARLIEST_TS or end_ts > LATEST_TS:
        raise ValueError(f"simulated time must lie in [{EARLIEST_TS}, {LATEST_TS}]")
    check_prefix(topic_prefix)
    plan = plan or EMPTY_PLAN
    stream_fleet = Fleet(fleet.devices + plan.extra_devices) if plan.extra_devices else fleet
    by_device: dict[str, tuple[Effect, ...]] = {}
    for a in anomalies or ():
        resolved = a.resolve(fleet, start_ts) if isinstance(a, AnomalySpec) else a
        device_id = fleet.get(resolved.truth.device_id).device_id  # raises for an unknown id
        by_device[device_id] = (*by_device.get(device_id, ()), LegacyAnomaly(resolved))
    for device_id, effects in plan.effects.items():
        stream_fleet.get(device_id)  # raises for an unknown id
        by_device[device_id] = (*by_device.get(device_id, ()), *effects)
    index = {d.device_id: i for i, d in enumerate(stream_fleet)}
    indices = np.array(sorted(index[d] for d in by_device), dtype=np.int64)
    history: dict[str, deque[bytes]] = {
        d: deque(maxlen=n) for d in by_device if (n := plan.history_depth(d)) > 0
    }
    targets = _Targets(by_device, indices, history)
    return _messages(
        stream_fleet,
        start_ts=start_ts,
        end_ts=end_ts,
        targets=targets,
        seed=seed,
        prefix=topic_prefix,
        plan=plan,
    )


def _messages(
    fleet: Fleet,
    *,
    start_ts: float,
    end_ts: float,
    targets: _Targets,
    seed: int,
    prefix: str,
    plan: StreamPlan,
) -> Iterator[Message]:
    for device in fleet:
        if device.device_id not in plan.unannounced:
            yield online(prefix, device, start_ts)
    scheduled = [m for m in plan.scheduled if start_ts <= m.ts < end_ts]
    n_sched, k = len(scheduled), 0
    next_sched = scheduled[0].ts if scheduled else math.inf
    if not len(fleet):
        yield from scheduled
        return

    keys = noise.stream_keys(np.array([d.noise_key for d in fleet], dtype=np.uint64), seed)
    schedule = Schedule(
        np.array([d.cadence_s * 1000 for d in fleet], dtype=np.int64),
        np.array([round(d.phase_s * 1000) for d in fleet], dtype=np.int64),
    )
    groups, group_of, row_of = _groups(fleet.devices, seed)
    topics = [topic(prefix, d, "telemetry") for d in fleet]
    ids = [d.device_id for d in fleet]
    start_ms, end_ms = math.ceil(start_ts * 1000), math.ceil(end_ts * 1000)
    first_report = schedule.first_report_at_or_after(start_ms)

    for due, due_ms in schedule.batches(start_ms, end_ms, BATCH_SIZE):
        report = schedule.report_number(due, due_ms)
        sent = noise.uniform(keys[due], report, _MISSING_STREAM) >= MISSING_RATE
        devices, times_ms, report = due[sent], due_ms[sent], report[sent]
        jitter = CLOCK_JITTER_S * noise.normal(keys[devices], report, _JITTER_STREAM)
        jitter = np.clip(jitter, -CLOCK_JITTER_MAX_S, CLOCK_JITTER_MAX_S)
        batch = _Batch(
            devices=devices,
            times_ms=times_ms,
            report=report,
            device_ts=np.round(times_ms / 1000.0 + jitter, 3),
            seq=report - first_report[devices],
        )
        payloads: list[bytes | None] = [None] * len(devices)
        extras: dict[int, list[bytes]] = {}
        for g, group in enumerate(groups):
            at = np.flatnonzero(group_of[devices] == g)
            if len(at):
                group.encode(batch, at, row_of[devices[at]], targets, payloads, extras)

        for pos, (i, ts_ms, payload) in enumerate(
            zip(devices.tolist(), times_ms.tolist(), payloads, strict=True)
        ):
            ts = ts_ms / 1000
            while next_sched <= ts:
                yield scheduled[k]
                k += 1
                next_sched = scheduled[k].ts if k < n_sched else math.inf
            if payload is not None:
                yield Message(ts, topics[i], payload, ids[i])
            if extras and pos in extras:
                for extra in extras[pos]:
                    yield Message(ts, topics[i], extra, ids[i])
    yield from scheduled[k:]


def _groups(devices: Sequence[Device], seed: int) -> tuple[list[_Group], np.ndarray, np.ndarray]:
    """One model per sub-type; per fleet index, its group and its row inside the group."""
    subtypes = sorted({d.subtype for d in devices})
    group_of = np.array([subtypes.index(d.subtype) for d in devices], dtype=np.int64)
    row_of = np.empty(len(devices), dtype=np.int64)
    groups = []
    for g, subtype in enumerate(subtypes):
        members = np.flatnonzero(group_of == g).tolist()
        row_of[members] = np.arange(len(members))
        mine = tuple(devices[i] for i in members)
        infos = tuple(network.info(d) for d in mine)
        groups.append(_Group(model_for(subtype, mine, seed), mine, mine[0].kind, infos))
    return groups, group_of, row_of
