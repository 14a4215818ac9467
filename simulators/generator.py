"""The fleet's message stream over a span of simulated time, in time order.

Reports are made batch by batch: the schedule says who reports when, each sub-type's model computes
the batch's metrics as numpy columns, orjson writes each column's numbers in one call, and per
message only a `%` splices them into the payload and a tuple is made. Memory stays bounded by the
batch size whatever the fleet size or the span.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from typing import Literal, overload

import numpy as np

from detectors.columns import Block, Keys, Reports
from detectors.model import DeviceRef
from detectors.slots import KeySpace
from simulators import network, noise, sun
from simulators.anomalies import Anomaly, AnomalySpec, Metrics
from simulators.effects import EMPTY_PLAN, Effect, LegacyAnomaly, Report, StreamPlan
from simulators.fleet import Device, Fleet
from simulators.messages import (
    DEFAULT_TOPIC_PREFIX,
    Message,
    Run,
    check_prefix,
    interleave,
    metric_block,
    online,
    payload_head,
    payload_tail,
    plain_messages,
    telemetry_payloads,
    topic,
)
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


Item = Message | Run  # what a decoded stream is made of


@dataclass(frozen=True, slots=True)
class _Batch:
    """Reports due in one window, in time order (parallel arrays), and their payloads."""

    devices: np.ndarray  # fleet index
    times_ms: np.ndarray  # when sent, simulated
    report: np.ndarray  # the device's report number since the epoch
    device_ts: np.ndarray  # payload ts: the device's clock, jittered
    seq: np.ndarray
    decoded: bool  # plain reports as columns (see `generate`), not payloads
    # Filled by the groups: per position its payload (None: an effect dropped the report; not
    # set for a plain report when `decoded`), and the messages effects add right after a
    # position. When `decoded`: per position the device's DeviceRef and info, the groups'
    # metric blocks, and the positions effects touched (their payloads are written).
    payloads: np.ndarray = field(init=False)
    dropped: set[int] = field(default_factory=set)
    extras: dict[int, list[bytes]] = field(default_factory=dict)
    refs: np.ndarray = field(init=False)
    infos: np.ndarray = field(init=False)
    blocks: list[Block] = field(default_factory=list)
    touched: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        for name in ("payloads", "refs", "infos"):
            object.__setattr__(self, name, np.empty(len(self.devices), dtype=object))

    def stream(self) -> tuple[np.ndarray, list[bytes]]:
        """The batch positions of the messages to publish, in stream order, and their
        payloads: a dropped report publishes nothing, an effect's extras follow their
        report."""
        payloads: list[bytes] = self.payloads.tolist()
        if not self.dropped and not self.extras:
            return np.arange(len(payloads)), payloads
        at: list[int] = []
        out: list[bytes] = []
        done = 0
        for pos in sorted(self.dropped | self.extras.keys()):
            at += range(done, pos)
            out += payloads[done:pos]
            added: list[bytes] = [*self.extras.get(pos, [])]
            if pos not in self.dropped:
                added.insert(0, payloads[pos])
            at += [pos] * len(added)
            out += added
            done = pos + 1
        at += range(done, len(payloads))
        out += payloads[done:]
        return np.array(at, dtype=np.int64), out

    def decoded_stream(
        self, sent: np.ndarray, topics: list[str], ids: list[str], fleet: _Numbered
    ) -> list[Item]:
        """The batch when `decoded`, in stream order: runs of plain reports (their devices
        numbered by fleet index), and the messages of the positions effects touched (a
        dropped report publishes nothing, an effect's extras follow their report)."""
        reports = Reports(
            self.refs.tolist(),
            self.device_ts,
            self.seq,
            tuple(self.blocks),
            self.infos.tolist(),
            keys=Keys(fleet.space, self.devices),
        )
        out: list[Item] = []
        done = 0
        for pos in [*sorted(self.touched), len(sent)]:
            if pos > done:
                part = reports.slice(done, pos)
                run = Run(sent[done:pos], topics[done:pos], part, fleet.device_ids)
                out.append(run)
            if pos == len(sent):
                break
            ts = float(sent[pos])
            if pos not in self.dropped:
                out.append(Message(ts, topics[pos], self.payloads[pos], ids[pos]))
            out += (Message(ts, topics[pos], extra, ids[pos]) for extra in self.extras.get(pos, ()))
            done = pos + 1
        return out


@dataclass(frozen=True, slots=True)
class _Group:
    """The devices of one sub-type, their model, and the constant parts of their payloads."""

    model: TelemetryModel
    devices: tuple[Device, ...]
    kind: str
    # Per device (object arrays: indexed by rows in one call): its info, `payload_head`,
    # `payload_tail` of its info, and its DeviceRef (for decoded streams).
    infos: np.ndarray
    heads: np.ndarray
    tails: np.ndarray
    refs: np.ndarray

    def encode(self, batch: _Batch, at: np.ndarray, rows: np.ndarray, targets: _Targets) -> None:
        """The payloads of this group's reports at batch positions `at`, into `batch.payloads`;
        the reports of targeted devices go through their effects."""
        t = batch.times_ms[at] / 1000.0
        report = batch.report[at]
        columns = self.model.metrics(rows, t, report)
        columns.update(network.columns(self.kind, self.model, rows, report, columns))
        ts, seq = batch.device_ts[at], batch.seq[at]
        if batch.decoded:
            batch.blocks.append(metric_block(at, columns))
            batch.refs[at] = self.refs[rows]
            batch.infos[at] = self.infos[rows]
        else:
            batch.payloads[at] = telemetry_payloads(
                self.heads[rows].tolist(), ts, seq, columns, self.tails[rows].tolist()
            )
        attacked = np.flatnonzero(np.isin(batch.devices[at], targets.indices))
        for j in attacked.tolist():
            row, pos = int(rows[j]), int(at[j])
            batch.touched.add(pos)
            metrics: Metrics = {name: column[j].item() for name, column in columns.items()}
            device, info = self.devices[row], self.infos[row]
            targets.apply(device, ts[j].item(), seq[j].item(), metrics, info, pos, batch)


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
        batch: _Batch,
    ) -> None:
        """Run the device's effects on its report at batch position `pos`."""
        history = self.history.get(device.device_id)
        report = Report(device, ts, seq, metrics, info, history=history)
        for effect in self.by_device.get(device.device_id, ()):
            if effect.applies(ts):
                effect.apply(report)
        if report.extras:
            batch.extras[pos] = report.extras
        if report.drop:
            batch.payloads[pos] = None
            batch.dropped.add(pos)
            return
        payload = report.payload()
        batch.payloads[pos] = payload
        if history is not None:
            history.append(payload)


@overload
def generate(
    fleet: Fleet,
    start_ts: float,
    end_ts: float,
    anomalies: Sequence[AnomalySpec | Anomaly] | None = None,
    seed: int = 0,
    *,
    topic_prefix: str = DEFAULT_TOPIC_PREFIX,
    plan: StreamPlan | None = None,
    decoded: Literal[False] = False,
) -> Iterator[Message]: ...


@overload
def generate(
    fleet: Fleet,
    start_ts: float,
    end_ts: float,
    anomalies: Sequence[AnomalySpec | Anomaly] | None = None,
    seed: int = 0,
    *,
    topic_prefix: str = DEFAULT_TOPIC_PREFIX,
    plan: StreamPlan | None = None,
    decoded: bool,
) -> Iterator[Message | Run]: ...


def generate(
    fleet: Fleet,
    start_ts: float,
    end_ts: float,
    anomalies: Sequence[AnomalySpec | Anomaly] | None = None,
    seed: int = 0,
    *,
    topic_prefix: str = DEFAULT_TOPIC_PREFIX,
    plan: StreamPlan | None = None,
    decoded: bool = False,
) -> Iterator[Message] | Iterator[Message | Run]:
    """Every message the fleet publishes in [start_ts, end_ts), sorted by `Message.ts`.

    First each device's retained `online` status at `start_ts`, then its telemetry every
    `cadence_s` from its phase on. A report is occasionally missing (its `seq` is then skipped,
    as if lost on the way) and payload `ts` carries a few hundred ms of clock jitter. The same
    fleet, span, anomalies, plan and seed always give byte-identical messages.

    `plan` (a compiled scenario, see `simulators.scenario`) adds effects on devices' reports,
    scheduled messages, and devices outside the fleet; its messages must use `topic_prefix`.

    `decoded`: plain reports (of devices no effect targets) come in `Run`s, as the columns
    the agent's decoder would read in their payloads, which are never written (what eval
    needs: the same stream without the JSON round trip and without an object per report).
    Everything else stays a Message.
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
    batches = _batches(
        stream_fleet,
        start_ts=start_ts,
        end_ts=end_ts,
        targets=targets,
        seed=seed,
        prefix=topic_prefix,
        plan=plan,
        decoded=decoded,
    )
    # Iterated in C: no generator frame to resume per message.
    return chain.from_iterable(batches)


def _batches(
    fleet: Fleet,
    *,
    start_ts: float,
    end_ts: float,
    targets: _Targets,
    seed: int,
    prefix: str,
    plan: StreamPlan,
    decoded: bool,
) -> Iterator[Iterable[Item]]:
    """The stream, batch by batch."""
    yield online(prefix, (d for d in fleet if d.device_id not in plan.unannounced), start_ts)
    scheduled = [m for m in plan.scheduled if start_ts <= m.ts < end_ts]
    k = 0  # scheduled messages sent so far
    if not len(fleet):
        yield scheduled
        return

    keys = noise.stream_keys(np.array([d.noise_key for d in fleet], dtype=np.uint64), seed)
    schedule = Schedule(
        np.array([d.cadence_s * 1000 for d in fleet], dtype=np.int64),
        np.array([round(d.phase_s * 1000) for d in fleet], dtype=np.int64),
    )
    groups, group_of, row_of = _groups(fleet.devices, seed)
    topics = np.array([topic(prefix, d, "telemetry") for d in fleet], dtype=object)
    ids = np.array([d.device_id for d in fleet], dtype=object)
    numbered = _numbered(groups, group_of) if decoded else None
    start_ms, end_ms = math.ceil(start_ts * 1000), math.ceil(end_ts * 1000)
    first_report = schedule.first_report_at_or_after(start_ms)

    for due, due_ms in schedule.batches(start_ms, end_ms, BATCH_SIZE):
        report = schedule.report_number(due, due_ms)
        sent = noise.uniform(keys[due], report, _MISSING_STREAM) >= MISSING_RATE
        devices, times_ms, report = due[sent], due_ms[sent], report[sent]
        if not len(devices):
            continue
        jitter = CLOCK_JITTER_S * noise.normal(keys[devices], report, _JITTER_STREAM)
        jitter = np.clip(jitter, -CLOCK_JITTER_MAX_S, CLOCK_JITTER_MAX_S)
        batch = _Batch(
            devices=devices,
            times_ms=times_ms,
            report=report,
            device_ts=np.round(times_ms / 1000.0 + jitter, 3),
            seq=report - first_report[devices],
            decoded=decoded,
        )
        for g, group in enumerate(groups):
            at = np.flatnonzero(group_of[devices] == g)
            if len(at):
                group.encode(batch, at, row_of[devices[at]], targets)

        messages: Iterable[Item]
        if decoded:
            on, by = topics[devices].tolist(), ids[devices].tolist()
            assert numbered is not None
            messages = batch.decoded_stream(times_ms / 1000, on, by, numbered)
        else:  # every payload is bytes
            at, payloads = batch.stream()
            senders = devices[at]
            sent_at, sent_on = (times_ms[at] / 1000).tolist(), topics[senders].tolist()
            messages = plain_messages(sent_at, sent_on, payloads, ids[senders].tolist())
        last_sent = times_ms[-1].item() / 1000  # of the batch's reports, dropped ones too
        if k < len(scheduled) and scheduled[k].ts <= last_sent:
            until = bisect_right(scheduled, last_sent, lo=k, key=_sent_at)
            messages = list(interleave(messages, scheduled[k:until], _sent_at))
            k = until
        yield messages
    yield scheduled[k:]


_sent_at = attrgetter("ts")


@dataclass(frozen=True, slots=True)
class _Numbered:
    """The fleet by index, as decoded runs name their devices (see `Keys`), and its ids."""

    space: KeySpace
    device_ids: frozenset[str]


def _numbered(groups: list[_Group], group_of: np.ndarray) -> _Numbered:
    refs, infos = np.empty(len(group_of), dtype=object), np.empty(len(group_of), dtype=object)
    for g, group in enumerate(groups):
        members = np.flatnonzero(group_of == g)  # in row order (see `_groups`)
        refs[members], infos[members] = group.refs, group.infos
    by_index: list[Mapping[str, str]] = infos.tolist()
    ids = np.array([id(info) for info in by_index], dtype=np.int64)
    space = KeySpace(refs.tolist(), by_index, ids)
    return _Numbered(space, frozenset(ref.device_id for ref in space.refs))


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
        infos = np.array([network.info(d) for d in mine], dtype=object)
        heads = np.array([payload_head(d.device_id) for d in mine], dtype=object)
        tails = np.array([payload_tail(info) for info in infos], dtype=object)
        model = model_for(subtype, mine, seed)
        refs = np.empty(len(mine), dtype=object)  # filled one by one: a DeviceRef is a tuple
        for i, d in enumerate(mine):
            refs[i] = DeviceRef(d.tenant, d.zone, d.kind, d.device_id)
        groups.append(_Group(model, mine, mine[0].kind, infos, heads, tails, refs))
    return groups, group_of, row_of
