"""Cadence: each device's reporting interval is learned; silences and floods raise.

- **interval**: an exponentially weighted mean of the log of the gaps between a device's
  reports (payload time). Gaps shorter than half the interval (duplicates, bursts) are not
  learned, they feed the flood bucket; longer ones are clipped at 3 intervals (a missing
  report moves the estimate a little, an outage barely).
- **silence**: no report for `silence_factor` intervals and at least `min_silence_s`, measured
  on the stream's time (detectors.streams.StreamClock), never the wall clock. A device found
  silent while the zone's devices of every *other* kind went quiet at the same moment is part
  of a zone outage (a power cut: lights, sensors and cameras together) and does not raise; a
  silence that the other kinds do not share (cameras dark, lights on) does. Clears on the next
  report.
- **flood**: a leaky bucket per device, +1 per message, draining `flood_factor` messages per
  learned interval of payload time; past `flood_burst` messages of excess it raises, below
  half of that it clears. A flood that lasts `adopt_after_s` is taken as the device's new
  interval (raised once, then adopted).

Batches arrive as columns (`update_columns`): the state that changes on every report (last
time, learned log-interval, bucket) lives in arrays indexed by the device's slot, and the rows
of a batch that change nothing but those (a warmed-up device, not firing, a gap inside the
usual band, a bucket below the flood line) are applied with array operations; every other row,
and every silence check that may raise, runs the per-record code below, in row order, with the
stream time as of that row.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from detectors import state as state_codec
from detectors.base import Detector, DetectorParams
from detectors.columns import Columns, columns_without_metrics
from detectors.model import DeviceRef, EvidenceValue, Record, Transition
from detectors.registry import register
from detectors.slots import Bools, BoundTable, DeviceTable, Floats, Ints, grown
from detectors.streams import StreamClock

_CLIP = math.log(3.0)  # a gap counts as at most 3 intervals
_FAST = math.log(0.5)  # gaps under half an interval are bursts, not cadence
_NEVER = -math.inf  # one shared float for every device's "no long gap yet"
# A device's reports are plain (array operations) only in these states: warmed up, not
# firing, queued for silence checks; or still learning its first `min_reports` gaps.
_OTHER, _WARM, _LEARNING = 0, 1, 2
Modes = npt.NDArray[np.int8]
_LEARNED = ("clock_", "devices_", "heap_", "started_")  # a state's tables, sorted


class CadenceParams(DetectorParams):
    min_reports: int = Field(default=8, ge=2, le=10_000)
    alpha: float = Field(default=0.05, gt=0, le=1)
    silence_factor: float = Field(default=10.0, ge=2)
    min_silence_s: float = Field(default=600.0, ge=0)
    # A device is "down" for the outage test once it missed this many intervals.
    overdue_factor: float = Field(default=3.0, ge=1.5)
    # Every other kind of the zone must have at least this share of its devices down.
    outage_fraction: float = Field(default=0.6, gt=0, le=1)
    flood_factor: float = Field(default=1.5, gt=1, le=100)
    flood_burst: float = Field(default=12.0, ge=2)
    adopt_after_s: float = Field(default=6 * 3600.0, gt=0)
    # A device first seen `learn_s` after the stream's start is new: its silence raises only
    # once it has reported for `new_device_settle_s` (0: at once). A rogue device that leaves
    # is the inventory detector's finding, not a dead device.
    learn_s: float = Field(default=3600.0, ge=0)
    new_device_settle_s: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> CadenceParams:
        if self.overdue_factor >= self.silence_factor:
            raise ValueError("overdue_factor must be below silence_factor")
        return self


# The fields that change on every report: held in the detector's per-slot arrays, and in a
# _Device only while per-record code works on it (`Cadence._load` .. `Cadence._store`).
_HOT = ("last_seen", "log_interval", "interval", "gaps", "bucket")
_NUMBERS = (*_HOT, "first_seen", "firing_since", "adopt_log", "gap_from", "gap_to")


class _Device:
    """One device's cadence; `log_interval` is the learned mean log-gap."""

    __slots__ = (
        "adopt_log",
        "bucket",
        "firing",
        "firing_since",
        "first_seen",
        "gap_from",
        "gap_to",
        "gaps",
        "interval",
        "last_seen",
        "log_interval",
        "queued",
    )

    def __init__(self, ts: float) -> None:
        self.last_seen = ts  # the latest payload time seen
        self.first_seen = ts
        self.log_interval = 0.0
        self.interval = 1.0  # exp(log_interval), kept with it: read on every report
        self.gaps = 0  # gaps learned
        self.bucket = 0.0
        self.firing = ""  # "", "silence" or "flood"
        self.firing_since = 0.0
        self.adopt_log = 0.0  # mean log-gap of every gap while flooding
        self.gap_from = _NEVER  # the last long gap (a silence), for the outage test
        self.gap_to = _NEVER
        self.queued = False  # has an entry in the silence heap


def _mode(state: _Device, min_reports: int) -> int:
    if state.firing:
        return _OTHER
    if state.gaps >= min_reports:
        return _WARM if state.queued else _OTHER
    return _OTHER if state.queued else _LEARNING


def _exactly(fn: Callable[[float], float], values: Floats) -> Floats:
    """`fn` (math.log, math.exp) of each value: numpy's own log/exp may round the last bit
    differently from the per-record code's, and every learned interval must be the same."""
    return np.fromiter(map(fn, values.tolist()), dtype=np.float64, count=len(values))


@dataclass(slots=True)
class _Plan:
    """One segment of a batch (no device twice): every row's state after a plain report,
    valid on the rows not `special`; `applied` rows are written to the arrays already."""

    slots: Ints
    ts: Floats
    special: Bools  # rows for the per-record code (found so up front, or touched since)
    log_interval: Floats
    interval: Floats
    gaps: Ints
    bucket: Floats
    applied: int = 0


@register("cadence")
class Cadence(Detector):
    params_model = CadenceParams
    params: CadenceParams

    def __init__(self, params: DetectorParams) -> None:
        if not isinstance(params, CadenceParams):
            raise TypeError("Cadence needs CadenceParams")
        super().__init__(params)
        self.devices_: dict[DeviceRef, _Device] = {}
        self.clock_ = StreamClock()
        # (deadline, device): when each warmed-up device is next due for a silence check.
        self.heap_: list[tuple[float, DeviceRef]] = []
        self.started_ = -math.inf  # the first record's time (the learning period's start)
        self._zones: dict[tuple[str, str], list[DeviceRef]] | None = None  # rebuilt on demand
        # Bound to the first device table seen; until then the _Devices hold every field.
        self._bound = BoundTable()
        self._last: Floats = np.zeros(0)
        self._log: Floats = np.zeros(0)
        self._interval: Floats = np.ones(0)
        self._gaps: Ints = np.zeros(0, dtype=np.int64)
        self._bucket: Floats = np.zeros(0)
        # What a report may be by the device's state: plain (_WARM, _LEARNING) or not (_OTHER).
        self._mode: Modes = np.zeros(0, dtype=np.int8)
        self._row: Ints = np.zeros(0, dtype=np.int64)  # its row in the segment at work, or -1

    # -- the columnar path ------------------------------------------------------------------

    @property
    def _table(self) -> DeviceTable | None:
        return self._bound.table

    def update(self, records: Sequence[Record]) -> list[Transition]:
        table = self._bound.table or DeviceTable()
        self._bind(table, own=True)  # nothing to do once bound
        return self.update_columns(columns_without_metrics(records, table))

    def update_columns(self, columns: Columns) -> list[Transition]:
        self._bind(columns.table)
        n = len(columns.slots)
        if n == 0:
            return []
        self._grow(len(columns.table))
        if self.started_ == -math.inf:
            self.started_ = max(self.clock_.now, columns.ts.item(0))
        # The stream's time as of each row, as the per-record loop would have it.
        now = np.maximum.accumulate(np.maximum(columns.ts, self.clock_.now))
        changes: list[Transition] = []
        for segment in columns.segments():
            plan = self._plan(columns.slots[segment], columns.ts[segment])
            self._run(plan, now[segment].tolist(), changes)
        self.clock_.now = now.item(n - 1)
        return changes

    def _plan(self, slots: Ints, ts: Floats) -> _Plan:
        """What a plain report does, for every row at once (the same IEEE operations, in the
        same order, as `_report` and `_learn`); the other rows are marked special."""
        p = self.params
        mode, gaps = self._mode[slots], self._gaps[slots]
        warm, learning = mode == _WARM, mode == _LEARNING
        interval = self._interval[slots]
        gap = ts - self._last[slots]
        # A plain report: a gap in the usual band (else the outage test's gap changes, or the
        # learning is skipped or clipped), a bucket that stays at or below the flood line, and
        # a learning device that stays short of `min_reports` (else it is queued).
        drains = gaps > 0
        plain = (warm | learning) & (gap > 0.0) & ~(drains & (gap > p.overdue_factor * interval))
        plain &= ~(learning & (gaps + 1 >= p.min_reports))
        before = self._bucket[slots]
        with np.errstate(all="ignore"):  # rows sent to the per-record code may hold anything
            bucket = before - gap * p.flood_factor / interval
        bucket = np.where(drains, np.where(bucket < 0.0, 0.0, bucket), before) + 1.0
        cap = 2 * p.flood_burst
        bucket = np.where(bucket > cap, cap, bucket)
        plain &= ~(warm & (bucket > p.flood_burst))
        rows = np.flatnonzero(plain)
        log_gap = _exactly(math.log, gap[rows])
        log_interval = self._log[slots[rows]]
        outside = (log_gap - log_interval < _FAST) | (log_gap > log_interval + _CLIP)
        band = ~(warm[rows] & outside)
        plain[rows] = band
        rows, log_gap, log_interval = rows[band], log_gap[band], log_interval[band]
        gaps = gaps[rows]
        weight = 1.0 / (gaps + 1)
        weight = np.where(weight < p.alpha, p.alpha, weight)
        learned = np.zeros(len(slots))
        # A first gap is taken as it is (`_learn`), not through the weighted mean.
        learned[rows] = np.where(
            gaps == 0, log_gap, log_interval + weight * (log_gap - log_interval)
        )
        intervals = np.zeros(len(slots))
        intervals[rows] = _exactly(math.exp, learned[rows])
        counts = np.zeros(len(slots), dtype=np.int64)
        counts[rows] = gaps + 1
        return _Plan(slots, ts, ~plain, learned, intervals, counts, bucket)

    def _run(self, plan: _Plan, now: list[float], changes: list[Transition]) -> None:
        """The segment in row order: the special rows through `_row_report`, the silence
        checks at the rows where the heap's first deadline has passed; the plain rows are
        written to the arrays in runs, before anything reads other devices."""
        heap = self.heap_
        size = len(now)
        special = np.flatnonzero(plan.special).tolist()  # ascending: a heap already
        self._row[plan.slots] = np.arange(size)
        row = 0
        while True:
            due = bisect_left(now, heap[0][0], row) if heap else size
            nxt = special[0] if special else size
            at = min(due, nxt)
            if at >= size:
                break
            if at == nxt:
                heapq.heappop(special)
                slot = plan.slots.item(at)
                change = self._row_report(slot, plan.ts.item(at), now[at])
                if change is not None:
                    changes.append(change)
            if heap and heap[0][0] <= now[at]:
                for later in self._checks(plan, at, now[at], changes):
                    heapq.heappush(special, later)
            row = at + 1
        self._apply(plan, size)
        self._row[plan.slots] = -1

    def _row_report(self, slot: int, ts: float, now: float) -> Transition | None:
        """The per-record code on one row (the device's state moved in and out of arrays)."""
        assert self._table is not None
        device = self._table.refs[slot]
        assert device is not None
        state = self.devices_.get(device)
        if state is None:
            self.devices_[device] = state = _Device(ts)
            self._store(slot, state)
            self._zones = None
            return None
        self._load(slot, state)
        change = self._report(device, state, ts, now)
        self._store(slot, state)
        return change

    def _checks(self, plan: _Plan, at: int, now: float, changes: list[Transition]) -> list[int]:
        """The silence checks due at row `at`; returns the later rows made special.

        A device that reported since its deadline is queued again at once, reading its last
        time and interval as of row `at` (the plan's values if its plain row is not written
        yet); any other entry goes to `_silences` after the rows so far are written."""
        p = self.params
        heap = self.heap_
        assert self._table is not None
        slot_of = self._table.slot_of
        while heap and heap[0][0] <= now:
            device = heap[0][1]
            slot = slot_of.get(device)
            if slot is None or self._mode.item(slot) != _WARM:
                break
            row = self._row.item(slot)
            if plan.applied <= row <= at and not plan.special.item(row):
                last, interval = plan.ts.item(row), plan.interval.item(row)
            else:
                last, interval = self._last.item(slot), self._interval.item(slot)
            due = last + max(p.silence_factor * interval, p.min_silence_s)
            if due <= now:
                break
            heapq.heapreplace(heap, (due, device))  # the same as `_silences` would do
        else:
            return []
        self._apply(plan, at + 1)
        touched: list[DeviceRef] = []
        changes += self._silences(now, touched)
        # A device checked here may have changed (raised, not queued): its later row in
        # this segment, if any, is the per-record code's.
        later = [self._row.item(slot_of[d]) for d in touched if d in slot_of]
        later = [row for row in later if row > at and not plan.special.item(row)]
        plan.special[later] = True
        return later

    def _apply(self, plan: _Plan, end: int) -> None:
        """Write the plain rows before `end` (not written yet) to the per-slot arrays."""
        if plan.applied >= end:
            return
        rows = np.flatnonzero(~plan.special[plan.applied : end]) + plan.applied
        slots = plan.slots[rows]
        self._last[slots] = plan.ts[rows]
        self._log[slots] = plan.log_interval[rows]
        self._interval[slots] = plan.interval[rows]
        self._gaps[slots] = plan.gaps[rows]
        self._bucket[slots] = plan.bucket[rows]
        plan.applied = end

    # -- per-slot arrays and their device table ---------------------------------------------

    def _bind(self, table: DeviceTable, *, own: bool = False) -> None:
        if self._bound.bind(table, own=own):
            self._store_all()

    def _grow(self, size: int) -> None:
        self._last = grown(self._last, size, 0.0)
        self._log = grown(self._log, size, 0.0)
        self._interval = grown(self._interval, size, 1.0)
        self._gaps = grown(self._gaps, size, 0)
        self._bucket = grown(self._bucket, size, 0.0)
        self._mode = grown(self._mode, size, _OTHER)
        self._row = grown(self._row, size, -1)

    def _load(self, slot: int, state: _Device) -> None:
        state.last_seen = self._last.item(slot)
        state.log_interval = self._log.item(slot)
        state.interval = self._interval.item(slot)
        state.gaps = self._gaps.item(slot)
        state.bucket = self._bucket.item(slot)

    def _store(self, slot: int, state: _Device) -> None:
        """Move the hot fields to the arrays (the _Device keeps none: one source of truth)."""
        self._last[slot] = state.last_seen
        self._log[slot] = state.log_interval
        self._interval[slot] = state.interval
        self._gaps[slot] = state.gaps
        self._bucket[slot] = state.bucket
        self._mode[slot] = _mode(state, self.params.min_reports)
        for name in _HOT:
            delattr(state, name)

    def _store_all(self) -> None:
        """Devices whose _Device holds every field (a loaded state) move into the arrays."""
        if self._table is None:
            return
        slots = self._table.slots(list(self.devices_)).tolist()
        self._grow(len(self._table))
        self._mode[:] = _OTHER  # devices of a state replaced are no more
        for slot, state in zip(slots, self.devices_.values(), strict=True):
            self._store(slot, state)

    def _each_device(self, move: Callable[[int, _Device], None]) -> None:
        """`move` (`_load`: arrays to objects, `_store`: back) on every device's state."""
        if self._table is None:
            return
        slot_of = self._table.slot_of
        for device, state in self.devices_.items():
            move(slot_of[device], state)

    def _slot(self, device: DeviceRef) -> int:
        assert self._table is not None
        return self._table.slot_of[device]

    def interval(self, device: DeviceRef) -> float | None:
        """The device's learned reporting interval in seconds (None: not tracked)."""
        if device not in self.devices_:
            return None
        if self._table is None:
            return self.devices_[device].interval
        return self._interval.item(self._slot(device))

    # -- the per-record code ----------------------------------------------------------------

    def _report(
        self, device: DeviceRef, state: _Device, ts: float, now: float
    ) -> Transition | None:
        # Transitions carry the stream's time `now`: a replayed record's own ts is old.
        p = self.params
        change = None
        gap = ts - state.last_seen
        if state.firing == "silence":
            change = self._clear(device, state, now, f"reporting again after {gap:.0f} s")
        bucket = state.bucket
        if gap > 0 and state.gaps:
            if gap > p.overdue_factor * state.interval:
                state.gap_from, state.gap_to = state.last_seen, ts
            bucket -= gap * p.flood_factor / state.interval
            if bucket < 0.0:  # noqa: PLR1730 - per record: no max() call
                bucket = 0.0
        bucket += 1.0
        if bucket > 2 * p.flood_burst:  # noqa: PLR1730 - per record: no min() call
            bucket = 2 * p.flood_burst
        state.bucket = bucket
        if gap > 0:
            self._learn(state, gap)
            state.last_seen = ts
        if state.gaps >= p.min_reports:
            if state.firing or bucket > p.flood_burst:  # else _flood has nothing to do
                change = self._flood(device, state, now) or change
            if not state.queued and not state.firing:
                self._queue(device, state)
        return change

    def _learn(self, state: _Device, gap: float) -> None:
        p = self.params
        log_gap = math.log(gap)
        if state.firing == "flood":
            state.adopt_log += p.alpha * (log_gap - state.adopt_log)
            return  # a flagged stretch does not move the baseline
        gaps, log_interval = state.gaps, state.log_interval
        if gaps == 0:
            state.log_interval = log_gap
            state.interval = math.exp(log_gap)  # always exp(log_interval), to the last bit
        else:
            if gaps >= p.min_reports:
                if log_gap - log_interval < _FAST:
                    return
                if log_gap > log_interval + _CLIP:  # noqa: PLR1730 - no min() call
                    log_gap = log_interval + _CLIP
            weight = 1.0 / (gaps + 1)
            if weight < p.alpha:  # noqa: PLR1730 - per record: no max() call
                weight = p.alpha
            log_interval += weight * (log_gap - log_interval)
            state.log_interval = log_interval
            state.interval = math.exp(log_interval)
        state.gaps = gaps + 1

    def _flood(self, device: DeviceRef, state: _Device, ts: float) -> Transition | None:
        p = self.params
        if state.firing == "flood":
            if state.bucket < p.flood_burst / 2:
                return self._clear(device, state, ts, "message rate back to its interval")
            if ts - state.firing_since >= p.adopt_after_s:
                state.log_interval = state.adopt_log
                state.interval = math.exp(state.adopt_log)
                state.bucket = 0.0
                reason = f"new reporting interval of {state.interval:.3g} s adopted"
                return self._clear(device, state, ts, reason)
            return None
        if state.firing or state.bucket <= p.flood_burst:
            return None
        state.firing, state.firing_since = "flood", ts
        state.adopt_log = state.log_interval
        expected = p.flood_factor
        return Transition(
            device,
            True,
            ts,
            f"{device.device_id} sends far more messages than its interval of"
            f" {state.interval:.3g} s allows",
            {
                "condition": "flood",
                "interval_s": round(state.interval, 3),
                "excess_messages": round(state.bucket, 1),
                "allowed_per_interval": expected,
                "burst": p.flood_burst,
                "baseline": f"mean log-gap of {state.gaps} reports",
            },
        )

    def _queue(self, device: DeviceRef, state: _Device) -> None:
        heapq.heappush(self.heap_, (state.last_seen + self._silence_after(state), device))
        state.queued = True

    def _silence_after(self, state: _Device) -> float:
        p = self.params
        return max(p.silence_factor * state.interval, p.min_silence_s)

    def _silences(self, now: float, touched: list[DeviceRef]) -> list[Transition]:
        """Pop every entry due at `now`; `touched` gets the devices popped."""
        changes: list[Transition] = []
        heap = self.heap_
        while heap and heap[0][0] <= now:
            _, device = heapq.heappop(heap)
            touched.append(device)
            state = self.devices_.get(device)
            if state is None or state.firing == "silence":
                continue  # forgotten, or already raised
            slot = self._slot(device)
            self._load(slot, state)
            change = self._check(device, state, now)
            self._store(slot, state)
            if change is not None:
                changes.append(change)
        return changes

    def _check(self, device: DeviceRef, state: _Device, now: float) -> Transition | None:
        heap = self.heap_
        state.queued = False
        due = state.last_seen + self._silence_after(state)
        if due > now:
            self._queue(device, state)  # it reported since
            return None
        if self._unsettled(state):
            return None  # a new device that left before it settled: not queued again
        if self._zone_outage(device, state, now):
            # Part of a zone outage: look again later, in case the zone comes back first.
            heapq.heappush(heap, (now + self._silence_after(state), device))
            state.queued = True
            return None
        state.firing, state.firing_since = "silence", now
        return self._silence(device, state, now)

    def _unsettled(self, state: _Device) -> bool:
        p = self.params
        new = state.first_seen - self.started_ > p.learn_s
        return new and state.last_seen - state.first_seen < p.new_device_settle_s

    def _silence(self, device: DeviceRef, state: _Device, now: float) -> Transition:
        quiet = now - state.last_seen
        evidence: dict[str, EvidenceValue] = {
            "condition": "silence",
            "silent_s": round(quiet, 1),
            "last_seen": state.last_seen,
            "interval_s": round(state.interval, 3),
            "silent_after_s": round(self._silence_after(state), 1),
            "baseline": f"mean log-gap of {state.gaps} reports",
            "other_kinds_down": False,
        }
        summary = (
            f"{device.device_id} silent for {quiet:.0f} s (reports every {state.interval:.3g} s;"
            " the zone's other kinds keep reporting)"
        )
        return Transition(device, True, now, summary, evidence)

    def _clear(self, device: DeviceRef, state: _Device, ts: float, reason: str) -> Transition:
        condition = state.firing
        state.firing = ""
        summary = f"{device.device_id} {reason}"
        return Transition(device, False, ts, summary, {"condition": condition, "reason": reason})

    def _zone_outage(self, device: DeviceRef, state: _Device, now: float) -> bool:
        """Whether every other kind of the device's zone went down with it.

        "Down with it": a share of at least `outage_fraction` of the kind's devices was in a
        long gap (over `overdue_factor` intervals) at the moment this device was surely quiet.
        """
        p = self.params
        probe = state.last_seen + p.overdue_factor * state.interval
        total: dict[str, int] = {}
        down: dict[str, int] = {}
        for other in self._zone(device):
            if other.kind == device.kind:
                continue
            o = self.devices_.get(other)
            if o is None:
                continue
            slot = self._slot(other)  # its hot fields are in the arrays, up to date
            if self._gaps.item(slot) < p.min_reports:
                continue
            total[other.kind] = total.get(other.kind, 0) + 1
            last_seen, interval = self._last.item(slot), self._interval.item(slot)
            ongoing = now - last_seen > p.overdue_factor * interval and last_seen <= probe
            if ongoing or o.gap_from <= probe <= o.gap_to:
                down[other.kind] = down.get(other.kind, 0) + 1
        # With no other kind to compare with there is no evidence of a power cut.
        return bool(total) and all(
            down.get(k, 0) >= p.outage_fraction * n for k, n in total.items()
        )

    def _zone(self, device: DeviceRef) -> list[DeviceRef]:
        if self._zones is None:
            zones: dict[tuple[str, str], list[DeviceRef]] = {}
            for ref in self.devices_:
                zones.setdefault((ref.tenant, ref.zone), []).append(ref)
            self._zones = zones
        return self._zones.get((device.tenant, device.zone), [])

    # -- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The former layout (every _Device with all its fields): keyed by device, not slot."""
        self._each_device(self._load)
        try:
            return super().state_dict()
        finally:
            self._each_device(self._store)

    def load_state(self, state: Mapping[str, Any]) -> None:
        learned = state_codec.unwrap(self.type_name, state)
        if set(learned) != set(_LEARNED):
            raise state_codec.StateError(
                f"state holds {sorted(learned)}, a cadence detector has {list(_LEARNED)}"
            )
        clock, devices, heap, started = (state_codec.decode(learned[n]) for n in _LEARNED)
        _check_loaded(clock, devices, heap, started)
        self.clock_, self.devices_, self.heap_, self.started_ = clock, devices, heap, started
        self._zones = None
        self._store_all()

    def tracked_devices(self) -> int:
        return len(self.devices_)

    def forget(self, device_ids: set[str]) -> None:
        gone = [ref for ref in self.devices_ if ref.device_id in device_ids]
        for ref in gone:
            del self.devices_[ref]
        if self._table is not None:
            slot_of = self._table.slot_of
            self._mode[[slot_of[ref] for ref in gone if ref in slot_of]] = _OTHER
        self._bound.release(device_ids)
        self.heap_ = [e for e in self.heap_ if e[1].device_id not in device_ids]
        heapq.heapify(self.heap_)
        self._zones = None


def _check_loaded(clock: object, devices: object, heap: object, started: object) -> None:
    """A loaded state has the shapes the code relies on (a file may hold anything)."""

    def number(value: object) -> bool:
        return isinstance(value, float | int) and not isinstance(value, bool)

    fine = (
        isinstance(devices, dict)
        and isinstance(heap, list)
        and isinstance(clock, StreamClock)
        and number(clock.now)
        and number(started)
    )
    fine = fine and all(
        isinstance(ref, DeviceRef)
        and isinstance(d, _Device)
        and all(number(getattr(d, name)) for name in _NUMBERS)
        and isinstance(d.gaps, int)
        and d.firing in ("", "silence", "flood")
        and isinstance(d.queued, bool)
        for ref, d in cast(dict[object, object], devices).items()
    )
    fine = fine and all(
        isinstance(e, tuple) and len(e) == 2 and number(e[0]) and isinstance(e[1], DeviceRef)
        for e in cast(list[object], heap)
    )
    if not fine:
        raise state_codec.StateError("a cadence state with values of the wrong type")
