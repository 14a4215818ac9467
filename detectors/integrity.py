"""Integrity: messages that cannot be genuine, whatever their values' usual level.

Per device, on every record:
- **replayed**: the sequence number goes back (and the time with it) - a captured message
  played again. A sequence that falls to `reset_max_seq` or below while time moves forward is
  the device restarting its counter, not a replay;
- **duplicate sequence number**: the same `seq` again with another timestamp (a second
  publisher on the topic). An exact copy (same `seq`, same `ts`) is MQTT's at-least-once
  redelivery and is ignored;
- **time going backwards**: `ts` earlier than the device's latest by more than
  `backwards_tolerance_s`;
- **clock skew**: the device's clock, averaged over its reports (`skew_alpha`), is more than
  `max_skew_s` away from the stream's time (detectors.streams.StreamClock);
- **impossible value**: a metric outside its physical bounds (`bounds`, over a built-in table
  of the fleet's metrics unless `default_bounds = false`);
- **stuck value**: one of `stuck_metrics` has repeated the same value for `stuck_after`
  reports although it changed at least `stuck_min_changes` times before (it normally moves).

The first finding raises (with its evidence); `clear_after` clean records in a row clear.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from detectors import state as state_codec
from detectors.base import Detector, DetectorParams
from detectors.columns import NO_SEQ, Columns
from detectors.model import DeviceRef, EvidenceValue, Record, Transition
from detectors.registry import register
from detectors.slots import Bools, BoundTable, DeviceTable, Floats, Ints, grown
from detectors.streams import StreamClock

_HUGE = 1e18
# What no healthy device of the simulated fleet's kinds can report (docs/wire-format.md).
DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {
    "on": (0.0, 1.0),
    "occupied": (0.0, 1.0),
    "dim_pct": (0.0, 100.0),
    "occupancy_pct": (0.0, 100.0),
    "storage_pct": (0.0, 100.0),
    "power_w": (0.0, 2_000.0),
    "lux": (0.0, 200_000.0),
    "driver_temp_c": (-50.0, 150.0),
    "burning_hours": (0.0, 200_000.0),
    "speed_kmh": (0.0, 250.0),
    "vehicles": (0.0, _HUGE),
    "bikes_available": (0.0, _HUGE),
    "docks_free": (0.0, _HUGE),
    "fps": (0.0, 240.0),
    "bitrate_kbps": (0.0, _HUGE),
    "upload_kbps": (0.0, _HUGE),
    "uptime_s": (0.0, _HUGE),
    **{
        f"net_{m}": (0.0, _HUGE)
        for m in (
            "bytes_out",
            "bytes_in",
            "pkts_out",
            "conns",
            "dst_ips",
            "dst_ports",
            "new_dsts",
            "telnet_attempts",
            "dns_queries",
        )
    },
}


class IntegrityParams(DetectorParams):
    backwards_tolerance_s: float = Field(default=1.0, ge=0)
    reset_max_seq: int = Field(default=16, ge=0)
    max_skew_s: float = Field(default=600.0, gt=0)
    skew_alpha: float = Field(default=0.1, gt=0, le=1)
    skew_min_reports: int = Field(default=10, ge=1)
    default_bounds: bool = True
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict, max_length=256)
    stuck_metrics: tuple[str, ...] = Field(default=(), max_length=64)
    stuck_after: int = Field(default=30, ge=2, le=100_000)
    stuck_min_changes: int = Field(default=10, ge=1)
    clear_after: int = Field(default=10, ge=1, le=100_000)

    @field_validator("bounds")
    @classmethod
    def _ordered(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (low, high) in v.items():
            if not low <= high:
                raise ValueError(f"bounds of {name}: low must not exceed high")
        return v


class _Device:
    """One device's state as the per-record code and checkpoints see it: a view loaded from
    the detector's per-slot arrays (the one source of truth) and stored back."""

    __slots__ = ("clean", "firing", "last_ts", "max_seq", "reports", "runs", "skew")

    def __init__(self, ts: float, seq: int | None) -> None:
        self.last_ts = ts
        self.max_seq = seq
        self.skew = 0.0
        self.reports = 0  # reports in the skew average
        self.firing = False
        self.clean = 0
        # Per stuck-watched metric, in `stuck_metrics` order: its last value (NaN: not seen
        # yet), run length and changes, flat (None: no watched metric seen yet).
        self.runs: array[float] | None = None


Finding = dict[str, EvidenceValue]
Bounds = tuple[float, float]

# Segments shorter than this go to the per-record code whole: the ~40 array operations of
# the vector path cost more than a few records' loop.
_MIN_VECTOR_ROWS = 16


@register("integrity")
class Integrity(Detector):
    params_model = IntegrityParams
    params: IntegrityParams

    def __init__(self, params: DetectorParams) -> None:
        if not isinstance(params, IntegrityParams):
            raise TypeError("Integrity needs IntegrityParams")
        super().__init__(params)
        self._bounds = {**(DEFAULT_BOUNDS if params.default_bounds else {}), **params.bounds}
        # Each stuck-watched metric and its offset in a device's `runs` array.
        self._stuck_at = tuple((name, 3 * i) for i, name in enumerate(params.stuck_metrics))
        self.clock_ = StreamClock()
        # The devices' slots: the engine's table (bound on the first batch), or one of our
        # own for callers of `update` outside an engine.
        self._bound = BoundTable()
        self._empty()

    def _empty(self) -> None:
        """No device's state. Per slot (see _Device); `_known`: the slot holds a device."""
        k = len(self.params.stuck_metrics)
        self._known: Bools = np.zeros(0, dtype=np.bool_)
        self._last_ts: Floats = np.zeros(0)
        self._max_seq: Ints = np.zeros(0, dtype=np.int64)  # NO_SEQ: None
        self._skew: Floats = np.zeros(0)
        self._reports: Ints = np.zeros(0, dtype=np.int64)
        self._firing: Bools = np.zeros(0, dtype=np.bool_)
        self._clean: Ints = np.zeros(0, dtype=np.int64)
        # Stuck runs, slots x stuck metrics: last value (NaN: none yet), run, changes.
        self._stuck_last: Floats = np.zeros((0, k))
        self._stuck_run: Floats = np.zeros((0, k))
        self._stuck_changes: Floats = np.zeros((0, k))

    def update(self, records: Sequence[Record]) -> list[Transition]:
        return self.update_columns(Columns.of(records, self._bound.for_records()))

    def update_columns(self, columns: Columns) -> list[Transition]:
        """Most reports are plain: a known device that is not firing, the next seq, time not
        going back, no finding. Per segment (no device twice), array operations apply the
        per-record code's arithmetic to those rows at once; every other row (a new device, a
        firing one, a sequence or time out of order, any finding) goes to the per-record code
        (`_step`) in row order, with the state as it was for that row. Rows of different
        devices share only the stream's time, known in advance for every row."""
        self._bind(columns.table)
        if len(columns) == 0:
            return []
        self._grow(len(columns.table))
        # The stream's time as of each row: the running max of ts, seeded with the clock.
        now_rows = np.maximum(np.maximum.accumulate(columns.ts), self.clock_.now)
        out_of_bounds = self._out_of_bounds_rows(columns)
        watched = [columns.column(name) for name in self.params.stuck_metrics]
        stuck_values = np.stack(watched, axis=1) if watched else np.zeros((len(columns), 0))
        changes: list[Transition] = []
        records, slots = columns.records, columns.slots
        for segment in columns.segments():
            rows: Iterable[int]
            if segment.stop - segment.start < _MIN_VECTOR_ROWS:
                rows = range(segment.start, segment.stop)
            else:
                rows = self._plain_rows(columns, segment, now_rows, out_of_bounds, stuck_values)
            for i in rows:
                change = self._step(records[i], int(slots[i]), float(now_rows[i]))
                if change is not None:
                    changes.append(change)
        self.clock_.now = float(now_rows[-1])
        return changes

    def _plain_rows(
        self,
        columns: Columns,
        segment: slice,
        now_rows: Floats,
        out_of_bounds: Bools,
        stuck_values: Floats,
    ) -> list[int]:
        """Applies the plain rows of a segment (each device at most once) to the state, as
        `_step` would; returns the other rows, for `_step`."""
        p = self.params
        s = columns.slots[segment]
        ts, seq, now = columns.ts[segment], columns.seq[segment], now_rows[segment]
        last_ts, max_seq = self._last_ts[s], self._max_seq[s]
        # `_sequence` without a finding: time not back beyond the tolerance, and a seq that
        # is new or absent (NO_SEQ < every seq: a device without a max_seq takes this one).
        plain = self._known[s] & ~self._firing[s] & ~out_of_bounds[segment]
        plain &= ~(ts < last_ts - p.backwards_tolerance_s) & ((seq == NO_SEQ) | (seq > max_seq))
        new_last_ts = np.where(ts > last_ts, ts, last_ts)
        new_max_seq = np.where(seq > max_seq, seq, max_seq)
        # The skew average, on clock readings (ts not before the device's latest): the same
        # IEEE operations in the same order as `_step` (elementwise, numpy rounds like Python).
        reading = ts >= last_ts
        reports = self._reports[s] + reading
        weight = np.maximum(1.0 / np.maximum(reports, 1), p.skew_alpha)
        skew = self._skew[s]
        skew = np.where(reading, skew + weight * (ts - now - skew), skew)
        plain &= ~(reading & (reports >= p.skew_min_reports) & (np.abs(skew) > p.max_skew_s))
        # Stuck runs, as `_stuck_values` (NaN: the record does not carry the metric).
        values = stuck_values[segment]
        last, run, changed_before = self._stuck_last[s], self._stuck_run[s], self._stuck_changes[s]
        same = values == last
        changed = ~same & ~np.isnan(values)
        changed_before = changed_before + (changed & ~np.isnan(last))
        run = np.where(same, run + 1, np.where(changed, 1.0, run))
        last = np.where(changed, values, last)
        stuck = (same | changed) & (run >= p.stuck_after) & (changed_before >= p.stuck_min_changes)
        plain &= ~stuck.any(axis=1)
        done = s[plain]
        self._last_ts[done] = new_last_ts[plain]
        self._max_seq[done] = new_max_seq[plain]
        self._reports[done] = reports[plain]
        self._skew[done] = skew[plain]
        self._stuck_last[done] = last[plain]
        self._stuck_run[done] = run[plain]
        self._stuck_changes[done] = changed_before[plain]
        others: list[int] = (np.flatnonzero(~plain) + segment.start).tolist()
        return others

    def _out_of_bounds_rows(self, columns: Columns) -> Bools:
        """Per row: some metric outside its physical bounds (as `_out_of_bounds`)."""
        out = np.zeros(len(columns), dtype=np.bool_)
        bounds_of = self._bounds.get
        for block in columns.blocks:
            bounds = [bounds_of(name, _UNBOUNDED) for name in block.names]
            if not bounds:
                continue
            low, high = np.array(bounds).T
            bad = (block.values < low) | (block.values > high)
            out[block.rows] = bad.any(axis=1)
        return out

    def _step(self, record: Record, slot: int, now: float) -> Transition | None:
        """The per-record code: one record of the device in `slot`, at stream time `now`."""
        p = self.params
        ts = record.ts
        state = self._load(slot)
        order: Finding | None = None
        if state is None:
            state = _Device(ts, record.seq)
        else:
            order = self._sequence(record, state)
        # Every check runs (each keeps its own running state); the first finding is reported.
        values = _out_of_bounds(record.metrics, self._bounds.get)
        if values is None and self._stuck_at:
            values = self._stuck_values(record, state)
        skew: Finding | None = None
        if ts >= state.last_ts:  # a late or replayed record is not a clock reading
            reports = state.reports + 1
            weight = 1.0 / reports
            if weight < p.skew_alpha:  # noqa: PLR1730 - as the vector path's maximum
                weight = p.skew_alpha
            state.skew += weight * (ts - now - state.skew)
            state.reports = reports
            limit = p.max_skew_s / 2 if state.firing else p.max_skew_s
            if reports >= p.skew_min_reports and abs(state.skew) > limit:
                skew = {"check": "clock skew", "skew_s": round(state.skew, 3)}
                skew["max_skew_s"] = limit
        finding = order or values or skew
        change = None
        if finding is not None or state.firing:
            change = self._decide(record.device, state, finding, now)
        self._store(slot, state)
        return change

    def _sequence(self, record: Record, state: _Device) -> Finding | None:
        """Sequence and time order; updates the device's latest seq and ts."""
        p = self.params
        ts, seq, last_ts, max_seq = record.ts, record.seq, state.last_ts, state.max_seq
        back = ts < last_ts - p.backwards_tolerance_s
        state.last_ts = max(ts, last_ts)
        finding: Finding | None = None
        if seq is not None and max_seq is not None:
            if seq == max_seq and ts != last_ts:
                finding = {"check": "duplicate seq", "seq": seq, "ts": ts, "previous_ts": last_ts}
            elif seq < max_seq:
                if ts > last_ts and seq <= p.reset_max_seq:
                    state.max_seq = seq  # the device restarted its counter
                    return None
                finding = {"check": "replayed", "seq": seq, "max_seq": max_seq}
                finding.update(ts=ts, latest_ts=last_ts, age_s=round(last_ts - ts, 3))
        if seq is not None and (max_seq is None or seq > max_seq):
            state.max_seq = seq
        if back and not finding:
            finding = {"check": "time backwards", "ts": ts, "latest_ts": last_ts}
            finding["age_s"] = round(last_ts - ts, 3)
        return finding

    def _stuck_values(self, record: Record, state: _Device) -> Finding | None:
        p = self.params
        after, min_changes = p.stuck_after, p.stuck_min_changes
        metrics, runs, width = record.metrics, state.runs, 3 * len(p.stuck_metrics)
        finding: Finding | None = None
        for name, at in self._stuck_at:
            value = metrics.get(name)
            if value is None or value != value:  # noqa: PLR0124 - absent, or NaN
                continue
            if runs is None or len(runs) != width:  # new, or reconfigured
                runs = state.runs = array("d", [math.nan, 0.0, 0.0] * len(p.stuck_metrics))
            last = runs[at]
            if value == last:
                run = runs[at + 1] = runs[at + 1] + 1
            else:
                # Not NaN (no value seen yet): it changed from a value seen before.
                if last == last:  # noqa: PLR0124
                    runs[at + 2] += 1
                runs[at] = value
                run = runs[at + 1] = 1
            if run >= after and finding is None and runs[at + 2] >= min_changes:
                reports, changes = int(run), int(runs[at + 2])
                finding = {"check": "stuck value", "metric": name, "value": value}
                finding.update(reports=reports, changes_before=changes)
        return finding

    def _decide(
        self, device: DeviceRef, state: _Device, finding: Finding | None, now: float
    ) -> Transition | None:
        # Alerts carry the stream's time: a replayed record's own ts is from the past.
        if finding:
            state.clean = 0
            if state.firing:
                return None
            state.firing = True
            return Transition(device, True, now, _summary(device, finding), finding)
        if not state.firing:
            return None
        state.clean += 1
        if state.clean < self.params.clear_after:
            return None
        state.firing = False
        summary = f"{device.device_id}: {state.clean} consistent reports in a row"
        return Transition(device, False, now, summary, {"clean_reports": state.clean})

    # Per-slot state: the arrays, and a device's view of them for the per-record code.

    def _load(self, slot: int) -> _Device | None:
        if not self._known[slot]:
            return None
        max_seq = int(self._max_seq[slot])
        state = _Device(float(self._last_ts[slot]), None if max_seq == NO_SEQ else max_seq)
        state.skew = float(self._skew[slot])
        state.reports = int(self._reports[slot])
        state.firing = bool(self._firing[slot])
        state.clean = int(self._clean[slot])
        last = self._stuck_last[slot]
        if not np.isnan(last).all():  # as before: no runs until a watched metric is seen
            runs = np.stack([last, self._stuck_run[slot], self._stuck_changes[slot]], axis=1)
            state.runs = array("d", runs.ravel().tolist())
        return state

    def _store(self, slot: int, state: _Device) -> None:
        self._known[slot] = True
        self._last_ts[slot] = state.last_ts
        self._max_seq[slot] = NO_SEQ if state.max_seq is None else state.max_seq
        self._skew[slot] = state.skew
        self._reports[slot] = state.reports
        self._firing[slot] = state.firing
        self._clean[slot] = state.clean
        runs = state.runs
        if runs is None or len(runs) != 3 * len(self._stuck_at):  # none yet, or reconfigured
            self._stuck_last[slot], self._stuck_run[slot], self._stuck_changes[slot] = np.nan, 0, 0
        else:
            flat = np.array(runs).reshape(-1, 3)
            self._stuck_last[slot], self._stuck_run[slot] = flat[:, 0], flat[:, 1]
            self._stuck_changes[slot] = flat[:, 2]

    def _grow(self, size: int) -> None:
        if len(self._known) >= size:
            return
        self._known = grown(self._known, size, False)
        self._last_ts = grown(self._last_ts, size, 0.0)
        self._max_seq = grown(self._max_seq, size, NO_SEQ)
        self._skew = grown(self._skew, size, 0.0)
        self._reports = grown(self._reports, size, 0)
        self._firing = grown(self._firing, size, False)
        self._clean = grown(self._clean, size, 0)
        self._stuck_last = _grown_rows(self._stuck_last, len(self._known), math.nan)
        self._stuck_run = _grown_rows(self._stuck_run, len(self._known), 0.0)
        self._stuck_changes = _grown_rows(self._stuck_changes, len(self._known), 0.0)

    @property
    def _table(self) -> DeviceTable | None:
        return self._bound.table

    def _bind(self, table: DeviceTable) -> None:
        """Takes the engine's table on the first batch; a state held in a table of our own
        (loaded from a checkpoint, or fed by `update`) moves into it, slot by slot."""
        if table is self._table:
            return
        views = self._views()
        self._bound.bind(table, over_own=True)
        self._put(views)

    def _views(self) -> dict[DeviceRef, _Device]:
        """Every known device's state, keyed by device, in slot order."""
        if self._table is None:
            return {}
        refs = self._table.refs
        views: dict[DeviceRef, _Device] = {}
        for slot in np.flatnonzero(self._known).tolist():
            ref, state = refs[slot], self._load(slot)
            assert ref is not None
            assert state is not None
            views[ref] = state
        return views

    def _put(self, views: dict[DeviceRef, _Device]) -> None:
        """Replaces the arrays by these devices' states, in `self._table`'s slots."""
        assert self._table is not None
        slots = self._table.slots(list(views)).tolist()
        self._empty()
        self._grow(len(self._table))
        for slot, state in zip(slots, views.values(), strict=True):
            self._store(slot, state)

    def tracked_devices(self) -> int:
        return int(np.count_nonzero(self._known))

    def forget(self, device_ids: set[str]) -> None:
        if self._table is None:
            return
        slots = [s for ref, s in self._table.slot_of.items() if ref.device_id in device_ids]
        # A slot not known is never read: `_step` stores a whole new state in it.
        self._known[[s for s in slots if s < len(self._known)]] = False
        self._bound.release(device_ids)

    def state_dict(self) -> dict[str, Any]:
        """As the per-device objects were saved before the state moved into arrays: keyed by
        device (a checkpoint outlives the slots), and older checkpoints still load."""
        learned = {"clock_": self.clock_, "devices_": self._views()}
        return state_codec.wrap(
            self.type_name, {k: state_codec.encode(v) for k, v in learned.items()}
        )

    def load_state(self, state: Mapping[str, Any]) -> None:
        learned = state_codec.unwrap(self.type_name, state)
        if set(learned) != {"clock_", "devices_"}:
            raise state_codec.StateError(
                f"state holds {sorted(learned)[:8]}, an integrity detector has clock_, devices_"
            )
        clock, views = (
            state_codec.decode(learned["clock_"]),
            state_codec.decode(learned["devices_"]),
        )
        if not isinstance(clock, StreamClock) or not isinstance(views, dict):
            raise state_codec.StateError("integrity state: a clock and a map of devices expected")
        if not all(isinstance(k, DeviceRef) and isinstance(v, _Device) for k, v in views.items()):
            raise state_codec.StateError("integrity state: device states expected")
        self._bound.for_records()  # a table of its own until the engine's comes
        try:
            self._put(views)
        except (TypeError, ValueError, OverflowError) as e:
            self._put({})
            raise state_codec.StateError(f"integrity state: {e}") from e
        self.clock_ = clock


def _grown_rows(matrix: Floats, size: int, fill: float) -> Floats:
    """`matrix` with rows added up to `size` rows, filled with `fill`."""
    if len(matrix) >= size:
        return matrix
    out = np.full((size, matrix.shape[1]), fill)
    out[: len(matrix)] = matrix
    return out


_UNBOUNDED = (-math.inf, math.inf)  # what a metric without bounds is checked against


def _out_of_bounds(
    metrics: dict[str, float], bounds_of: Callable[[str, Bounds], Bounds]
) -> Finding | None:
    """The first metric outside its physical bounds (NaN is not: it compares with nothing)."""
    for name, value in metrics.items():
        low, high = bounds_of(name, _UNBOUNDED)
        if value < low or value > high:
            finding: Finding = {"check": "impossible value", "metric": name, "value": value}
            finding.update(expected_low=low, expected_high=high)
            finding["baseline"] = "physical bounds"
            return finding
    return None


_SUMMARIES = {
    "replayed": "replays seq {seq} (latest {max_seq}), {age_s} s old",
    "duplicate seq": "sent seq {seq} twice with different times (a second publisher?)",
    "time backwards": "time went back by {age_s} s",
    "clock skew": "clock is {skew_s} s off the fleet's",
    "impossible value": "reports {metric} = {value}, outside {expected_low}..{expected_high}",
    "stuck value": "{metric} stuck at {value} for {reports} reports",
}


def _summary(device: DeviceRef, finding: Finding) -> str:
    return f"{device.device_id} " + _SUMMARIES[str(finding["check"])].format(**finding)
