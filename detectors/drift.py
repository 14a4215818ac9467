"""Peer drift: a device's metric measured against the devices of its zone that report it.

Devices of one kind and zone share the city's rhythm (rush hours, night), each at its own
scale; their ratio is steady. Per window of `window_s` stream seconds, each device's mean of
`metric` is compared with the median of its peers' means (same tenant, zone and kind; the
tenant's when the zone has fewer than `min_peers` others, unless `tenant_fallback` is off):
`x = log(mean / peers)`. Windows
where the peers' mean is under `min_level` (night counts near zero) are skipped.

- **jump**: `x` above the median of the device's last windows by at least `jump` (log units)
  and `jump_sigmas` robust scales: a camera that suddenly uploads twice what its peers do.
- **slope**: the least-squares slope of the last `slope_windows` values of `x` against time,
  at least `min_slope` per hour and `slope_t` standard errors (the residual scale, never under
  `min_noise`): a counter inflated a few % more every hour.

`direction` says which side raises (`up` by default). The first finding raises; flagged windows
are not learned; `clear_after` unflagged windows clear; a jump lasting `adopt_after` windows is
adopted as the new normal (raised once). Per device: a window accumulator and `history` values.

Batches come as columns (`update_columns`): between two window closes a record only adds to
its device's sums, so those are arrays by device slot, added to with a few array operations;
only a close runs per-device code.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from detectors import state as state_codec
from detectors.base import Detector, DetectorParams
from detectors.columns import Columns
from detectors.model import DeviceRef, EvidenceValue, Record, Transition
from detectors.registry import register
from detectors.slots import BoundTable, DeviceTable, Floats, Ints, grown
from detectors.streams import StreamClock, forget_devices

_MAD_TO_SIGMA = 1.4826
_Sums = tuple[int, float, int]  # a device's open window: its index, sum and count
_EXACT = 2**53  # window indexes and counts beyond it do not survive a float64 or int64 array


class PeerDriftParams(DetectorParams):
    metric: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    window_s: float = Field(default=1800.0, ge=10)
    min_peers: int = Field(default=2, ge=1, le=10_000)
    # Without enough peers in the zone, compare with the tenant's devices of the kind. Off for
    # metrics that local events move (a festival doubles one district's traffic).
    tenant_fallback: bool = True
    min_level: float = Field(default=0.0, ge=0)
    history: int = Field(default=24, ge=4, le=1000)
    min_history: int = Field(default=4, ge=2)
    direction: Literal["up", "down", "both"] = "up"
    checks: tuple[Literal["jump", "slope"], ...] = Field(default=("jump", "slope"), min_length=1)
    jump: float = Field(default=0.47, gt=0)  # log(1.6)
    jump_sigmas: float = Field(default=6.0, gt=0)
    slope_windows: int = Field(default=16, ge=4, le=1000)
    # The metric is a count per report (vehicles): each window's log-ratio is weighted by its
    # Poisson precision (1 / (1/device count + 1/peer count)), so quiet night windows barely
    # weigh; the residuals' dispersion only ever widens that noise.
    counts: bool = False
    min_slope: float = Field(default=0.015, gt=0)  # log units per hour
    slope_t: float = Field(default=6.0, gt=0)
    min_noise: float = Field(default=0.02, gt=0)
    # A device is a peer of the others once it has been seen for this many windows.
    peer_after: int = Field(default=16, ge=0, le=100_000)
    clear_after: int = Field(default=2, ge=1)
    adopt_after: int = Field(default=6, ge=1)


class _Device:
    """A device's judged windows; its open window's sums live in PeerDrift's slot arrays."""

    __slots__ = ("firing", "first", "flagged", "history", "normal")

    def __init__(self, window: int) -> None:
        self.first = window  # the window it was first seen in
        # Flat (window, x, weight) triples, oldest first, the window counted from `first`;
        # weight is the window's precision (1.0 unless `counts`). Single-precision floats
        # (exact for window counts below 2**24): a full history is ~390 bytes per device
        # and drift detector, where a deque of tuples cost ~3,900.
        self.history = array("f")
        self.firing = ""  # "", "jump" or "slope"
        self.flagged = 0  # flagged windows in a row
        self.normal = 0  # unflagged windows in a row while firing


class _Ranked:
    """A group's values sorted once: the median of all of them but one, by rank, is what
    `statistics.median` gives on the rest (the same pair averaged as `(a + b) / 2`)."""

    __slots__ = ("rank", "sorted")

    def __init__(self, sorted_values: list[float], rank: dict[DeviceRef, int]) -> None:
        self.sorted = sorted_values
        self.rank = rank

    @classmethod
    def of(cls, values: dict[DeviceRef, float]) -> _Ranked:
        order = sorted(values, key=values.__getitem__)
        return cls([values[r] for r in order], {r: i for i, r in enumerate(order)})

    def mapped(self, increasing: Callable[[float], float]) -> _Ranked:
        """The same members, each value through a non-decreasing function: no new sort."""
        return _Ranked([increasing(v) for v in self.sorted], self.rank)

    def __len__(self) -> int:
        return len(self.sorted)

    def __contains__(self, ref: DeviceRef) -> bool:
        return ref in self.rank

    def median(self, without: DeviceRef | None = None) -> float:
        """The median of the values, leaving out `without`'s when it is one of them."""
        skip = self.rank.get(without, -1) if without is not None else -1
        v = self.sorted
        n = len(v) - (skip >= 0)

        def at(k: int) -> float:
            return v[k + 1] if 0 <= skip <= k else v[k]

        if n % 2:
            return at(n // 2)
        return (at(n // 2 - 1) + at(n // 2)) / 2


def _median(values: list[float]) -> float:
    """`statistics.median` of a non-empty list (the same arithmetic), without its checks:
    it runs twice per device at every window's close."""
    ordered = sorted(values)
    half = len(ordered) // 2
    return ordered[half] if len(ordered) % 2 else (ordered[half - 1] + ordered[half]) / 2


class _Peers:
    """One zone's (or tenant's) references at a window's close, from its members' log-means,
    window totals, and which of them are established."""

    __slots__ = ("everyone", "known", "level", "total_everyone", "total_known", "totals")

    def __init__(
        self, logs: dict[DeviceRef, float], totals: dict[DeviceRef, float], known: list[DeviceRef]
    ) -> None:
        self.everyone = _Ranked.of(logs)  # log-means of every member
        self.level = self.everyone.mapped(math.exp)  # the means, for the level (`min_level`)
        self.known = _Ranked.of({o: logs[o] for o in known})  # of the established members
        self.totals = totals
        self.total_everyone = sum(totals.values())
        self.total_known = sum(totals[o] for o in known)

    def index(self, ref: DeviceRef, min_peers: int) -> tuple[float, float, int]:
        """`ref`'s peer index (median log-mean of the others, established ones when there are
        `min_peers` of them), their pooled total, and how many they are. The pooled total is
        the group's minus `ref`'s: exact for counts (integers), within rounding otherwise."""
        mine = self.totals[ref]
        if ref in self.known:
            if len(self.known) - 1 >= min_peers:
                pooled = self.total_known - mine
                return self.known.median(without=ref), pooled, len(self.known) - 1
        elif len(self.known) >= min_peers:
            return self.known.median(), self.total_known, len(self.known)
        return self.everyone.median(without=ref), self.total_everyone - mine, len(self.everyone) - 1


@register("peer_drift")
class PeerDrift(Detector):
    params_model = PeerDriftParams
    params: PeerDriftParams

    def __init__(self, params: DetectorParams) -> None:
        if not isinstance(params, PeerDriftParams):
            raise TypeError("PeerDrift needs PeerDriftParams")
        super().__init__(params)
        self.devices_: dict[DeviceRef, _Device] = {}
        self.clock_ = StreamClock()
        self.window_ = -1  # the stream's current window
        # Each device's open window: its index (NaN: a slot without a device), the sum and
        # the count of its values, by slot of the DeviceTable bound at the first batch.
        self._bound = BoundTable()
        self._window: Floats = np.full(0, np.nan)
        self._total: Floats = np.zeros(0)
        self._n: Ints = np.zeros(0, dtype=np.int64)
        self._order: Ints | None = None  # the slots of `devices_`, in its order
        # A checkpoint's sums, until a table gives the devices slots.
        self._loaded: dict[DeviceRef, _Sums] = {}

    @property
    def _table(self) -> DeviceTable | None:
        return self._bound.table

    def update(self, records: Sequence[Record]) -> list[Transition]:
        table = self._bound.table or DeviceTable()
        self._bind(table, own=True)  # nothing to do once bound
        return self.update_columns(Columns.of(records, table))

    def update_columns(self, columns: Columns) -> list[Transition]:
        """Per record, as a loop would: the stream time (the latest ts) moves on; when its
        window passes the current one, that window closes (`_close`); a finite value of
        `metric` from the current window adds to its device's sums, others are late. Between
        two closes the additions are independent of one another: done as arrays."""
        self._bind(columns.table)
        if not len(columns):
            return []
        ts = columns.ts
        if not np.isfinite(ts).all():
            raise ValueError("a record's ts is not a finite number")
        self._grow(len(columns.table))
        width = self.params.window_s
        # Windows are integral floats: exact, and no int64 overflow whatever ts comes.
        now = np.maximum.accumulate(np.concatenate(([self.clock_.now], ts)))[1:]
        current = np.maximum(np.floor(now / width), float(self.window_))  # after each row
        values = columns.column(self.params.metric)
        counted = np.isfinite(values) & (np.floor(ts / width) == current)
        before = np.concatenate(([float(self.window_)], current[:-1]))
        changes: list[Transition] = []
        start = 0
        for row in np.flatnonzero(current > before).tolist():
            self._add(columns.slots, values, counted, slice(start, row))
            if self.window_ >= 0:
                changes += self._close(self.window_)
            self.window_ = int(current[row])
            start = row
        self._add(columns.slots, values, counted, slice(start, len(columns)))
        self.clock_.now = float(now[-1])
        return changes

    def _add(
        self, slots: Ints, values: Floats, counted: npt.NDArray[np.bool_], rows: slice
    ) -> None:
        """Add the counted rows (all of the current window) to their devices' sums."""
        picked = np.flatnonzero(counted[rows]) + rows.start
        if not len(picked):
            return
        mine = slots[picked]
        window = float(self.window_)
        unknown = np.isnan(self._window[mine])
        if unknown.any():
            # New devices join `devices_` in the order of their first record, as one by one.
            new, first = np.unique(mine[unknown], return_index=True)
            assert self._table is not None
            refs = self._table.refs
            for slot in new[np.argsort(first)].tolist():
                ref = refs[slot]
                assert ref is not None
                self.devices_[ref] = _Device(self.window_)
            self._order = None
        stale = mine[self._window[mine] != window]
        self._window[stale] = window
        self._total[stale] = 0.0
        self._n[stale] = 0
        # `ufunc.at` applies repeated slots one after the other in row order: the same
        # float additions, in the same order, as a per-record `total += value`.
        np.add.at(self._total, mine, values[picked])
        np.add.at(self._n, mine, 1)

    def _close(self, window: int) -> list[Transition]:
        p = self.params
        refs = list(self.devices_)
        if self._order is None:
            assert self._table is not None
            slot_of = self._table.slot_of
            self._order = np.array([slot_of[ref] for ref in refs], dtype=np.int64)
        sums, counts = self._total[self._order], self._n[self._order]
        live = np.flatnonzero((self._window[self._order] == window) & (counts > 0) & (sums > 0))
        # The mean divides as Python would (float / int); the log in Python: math.log and
        # np.log may differ in the last bit.
        means = (sums[live] / counts[live]).tolist()
        logs: dict[DeviceRef, float] = {}
        totals: dict[DeviceRef, float] = {}
        for i, mean, total in zip(live.tolist(), means, sums[live].tolist(), strict=True):
            logs[refs[i]] = math.log(mean)
            totals[refs[i]] = total
        zones: dict[tuple[str, str, str], list[DeviceRef]] = {}
        tenants: dict[tuple[str, str], list[DeviceRef]] = {}
        for ref in logs:
            zones.setdefault((ref.tenant, ref.zone, ref.kind), []).append(ref)
            tenants.setdefault((ref.tenant, ref.kind), []).append(ref)
        # Each group's order statistics are made once, so a window's close costs
        # O(n log n) in a zone's size, not O(n^2): a 4,000-camera zone is one sort.
        peers: dict[tuple[str, ...], _Peers] = {}
        end = (window + 1) * p.window_s
        changes: list[Transition] = []
        for ref, y in logs.items():
            key: tuple[str, ...] = (ref.tenant, ref.zone, ref.kind)
            group, scope = zones[ref.tenant, ref.zone, ref.kind], "zone"
            if len(group) - 1 < p.min_peers:
                if not p.tenant_fallback:
                    continue
                key, group, scope = (ref.tenant, ref.kind), tenants[ref.tenant, ref.kind], "tenant"
                if len(group) - 1 < p.min_peers:
                    continue
            ranked = peers.get(key)
            if ranked is None:
                ranked = peers[key] = self._peers(group, logs, totals, window)
            level = ranked.level.median(without=ref)
            if level <= p.min_level:
                continue
            index, pooled, used = ranked.index(ref, p.min_peers)
            x = y - index
            state = self.devices_[ref]
            weight = 1.0 / (1.0 / totals[ref] + 1.0 / pooled) if p.counts else 1.0
            point = (x, weight)
            change = self._judge(ref, state, end, point, math.exp(y), level, scope, used)
            if change is not None:
                changes.append(change)
        return changes

    def _peers(
        self,
        group: list[DeviceRef],
        logs: dict[DeviceRef, float],
        totals: dict[DeviceRef, float],
        window: int,
    ) -> _Peers:
        """A group's references. Its established members (present for `peer_after` windows)
        set the index, so that a device that just appeared (a rogue one) does not move its
        zone's reference when it comes and goes; all of them while too few are established
        (the start of a stream)."""
        after = self.params.peer_after
        known = [o for o in group if window - self.devices_[o].first >= after]
        return _Peers({o: logs[o] for o in group}, {o: totals[o] for o in group}, known)

    def _judge(
        self,
        ref: DeviceRef,
        state: _Device,
        end: float,
        point: tuple[float, float],
        mean: float,
        level: float,
        scope: str,
        peers: int,
    ) -> Transition | None:
        p = self.params
        x, weight = point
        finding = self._jump(state, x) or self._slope(state, end, point)
        if finding is None:
            self._remember(state, end, x, weight)
            state.flagged = 0
            if state.firing:
                state.normal += 1
                if state.normal >= p.clear_after:
                    return self._clear(ref, state, end, "back in line with its peers")
            return None
        condition, detail = finding
        state.flagged += 1
        state.normal = 0
        if state.firing:
            if condition == "jump" and state.flagged >= p.adopt_after:
                del state.history[:]
                self._remember(state, end, x, weight)
                return self._clear(ref, state, end, f"new ratio {math.exp(x):.3g} adopted")
            return None
        state.firing = condition
        evidence: dict[str, EvidenceValue] = {
            "metric": p.metric,
            "value": round(mean, 6),
            "peer_median": round(level, 6),
            "log_ratio": round(x, 6),
            "peers": peers,
            "baseline": f"median of {peers} peers of the {scope}",
            "history_windows": len(state.history) // 3,
            "window_s": p.window_s,
            **detail,
            "condition": condition,
        }
        summary = (
            f"{p.metric} on {ref.device_id} is {mean:g}, {math.exp(x):.2f}x its peers' median"
            f" {level:g} ({condition}: {detail['reason']})"
        )
        return Transition(ref, True, end, summary, evidence)

    def _offset(self, state: _Device, end: float) -> int:
        """The window ending at `end`, counted from the device's first window."""
        return round(end / self.params.window_s) - 1 - state.first

    def _remember(self, state: _Device, end: float, x: float, weight: float) -> None:
        """Append a window to the device's history, keeping the last `history` (or
        `slope_windows`) of them."""
        keep = 3 * max(self.params.history, self.params.slope_windows)
        state.history.extend((self._offset(state, end), x, weight))
        if len(state.history) > keep:
            del state.history[: len(state.history) - keep]

    def _side(self, d: float) -> float:
        direction = self.params.direction
        return d if direction == "up" else -d if direction == "down" else abs(d)

    def _jump(self, state: _Device, x: float) -> tuple[str, dict[str, EvidenceValue]] | None:
        p = self.params
        if "jump" not in p.checks or len(state.history) // 3 < p.min_history:
            return None
        recent = state.history[1::3].tolist()
        center = _median(recent)
        mad = _median([abs(v - center) for v in recent]) * _MAD_TO_SIGMA
        scale = max(mad, p.min_noise)
        d = self._side(x - center)
        if d < p.jump or d < p.jump_sigmas * scale:
            return None
        reason = f"ratio moved from {math.exp(center):.3g} to {math.exp(x):.3g}"
        return "jump", {
            "expected_log_ratio": round(center, 6),
            "scale": round(scale, 6),
            "reason": reason,
        }

    def _slope(
        self, state: _Device, end: float, point: tuple[float, float]
    ) -> tuple[str, dict[str, EvidenceValue]] | None:
        """Weighted least-squares slope of the log-ratio over the last `slope_windows`."""
        p = self.params
        if "slope" not in p.checks:
            return None
        past = state.history[-3 * (p.slope_windows - 1) :]
        now = self._offset(state, end)
        points = [*zip(past[0::3], past[1::3], past[2::3], strict=True), (now, *point)]
        if len(points) < max(p.min_history, 3):
            return None
        t = [(k - now) * p.window_s / 3600.0 for k, _, _ in points]
        y = [v for _, v, _ in points]
        w = [u for _, _, u in points]
        sw = sum(w)
        tm = sum(a * u for a, u in zip(t, w, strict=True)) / sw
        ym = sum(b * u for b, u in zip(y, w, strict=True)) / sw
        sxx = sum(u * (a - tm) ** 2 for a, u in zip(t, w, strict=True))
        if sxx <= 0:
            return None
        slope = sum(u * (a - tm) * (b - ym) for a, b, u in zip(t, y, w, strict=True)) / sxx
        chi2 = sum(
            u * (b - ym - slope * (a - tm)) ** 2 for a, b, u in zip(t, y, w, strict=True)
        ) / (len(points) - 2)
        # Unweighted: chi2 is the residual variance. Counts: it is the overdispersion factor.
        spread = max(chi2, 1.0) if p.counts else max(chi2, p.min_noise**2)
        stat = slope / math.sqrt(spread / sxx)
        if self._side(slope) < p.min_slope or self._side(stat) < p.slope_t:
            return None
        span = t[-1] - t[0]
        reason = f"ratio trending {slope * 100:+.2g} %/h over {span:.3g} h"
        return "slope", {
            "slope_per_hour": round(slope, 6),
            "t_stat": round(stat, 3),
            "dispersion": round(spread, 6),
            "windows": len(points),
            "reason": reason,
        }

    def _clear(self, ref: DeviceRef, state: _Device, ts: float, reason: str) -> Transition:
        condition = state.firing
        state.firing, state.flagged, state.normal = "", 0, 0
        summary = f"{self.params.metric} on {ref.device_id}: {reason}"
        return Transition(ref, False, ts, summary, {"condition": condition, "reason": reason})

    def tracked_devices(self) -> int:
        return len(self.devices_)

    def forget(self, device_ids: set[str]) -> None:
        forget_devices(self.devices_, device_ids)
        forget_devices(self._loaded, device_ids)
        if self._table is None:
            return
        gone = [s for ref, s in self._table.slot_of.items() if ref.device_id in device_ids]
        self._reset(np.array(gone, dtype=np.int64))
        self._bound.release(device_ids)
        self._order = None

    def state_dict(self) -> dict[str, Any]:
        """The learned attributes, plus the open window's sums by device (not by slot: a
        checkpoint outlives the process and its table)."""
        learned = state_codec.encode_learned(self)
        learned["sums_"] = state_codec.encode(self._sums())
        return state_codec.wrap(self.type_name, learned)

    def load_state(self, state: Mapping[str, Any]) -> None:
        learned = dict(state_codec.unwrap(self.type_name, state))
        sums = _decode_sums(learned.pop("sums_", None))
        before = self.devices_, self.clock_, self.window_
        super().load_state(state_codec.wrap(self.type_name, learned))
        if set(sums) != set(self.devices_):
            self.devices_, self.clock_, self.window_ = before
            raise state_codec.StateError("state's window sums are not those of its devices")
        self._reset(np.arange(len(self._window), dtype=np.int64))
        self._loaded = {ref: sums[ref] for ref in self.devices_}
        self._order = None
        if self._table is not None:
            self._restore()

    def _sums(self) -> dict[DeviceRef, _Sums]:
        if self._table is None:
            return dict(self._loaded)
        slot_of = self._table.slot_of
        out: dict[DeviceRef, _Sums] = {}
        for ref in self.devices_:
            slot = slot_of[ref]
            out[ref] = (int(self._window[slot]), float(self._total[slot]), int(self._n[slot]))
        return out

    def _bind(self, table: DeviceTable, *, own: bool = False) -> None:
        if self._bound.bind(table, own=own):
            self._restore()

    def _restore(self) -> None:
        """Give a checkpoint's devices their slots and sums."""
        assert self._table is not None
        if not self._loaded:
            return
        slots = self._table.slots(list(self._loaded))
        self._grow(len(self._table))
        windows, totals, counts = zip(*self._loaded.values(), strict=True)
        self._window[slots] = windows
        self._total[slots] = totals
        self._n[slots] = counts
        self._loaded = {}
        self._order = None

    def _grow(self, size: int) -> None:
        self._window = grown(self._window, size, np.nan)
        self._total = grown(self._total, size, 0.0)
        self._n = grown(self._n, size, 0)

    def _reset(self, slots: Ints) -> None:
        slots = slots[slots < len(self._window)]
        self._window[slots] = np.nan
        self._total[slots] = 0.0
        self._n[slots] = 0


def _decode_sums(data: Any) -> dict[DeviceRef, _Sums]:
    """A checkpoint's window sums, checked: a state file is attacker-writable."""
    sums = state_codec.decode(data) if data is not None else None
    if not isinstance(sums, dict):
        raise state_codec.StateError("state has no window sums")
    for ref, value in sums.items():
        if not (
            isinstance(ref, DeviceRef)
            and isinstance(value, tuple)
            and len(value) == 3
            and all(type(v) is t for v, t in zip(value, (int, float, int), strict=True))
            and abs(value[0]) <= _EXACT
            and 0 <= value[2] <= _EXACT
        ):
            raise state_codec.StateError("a window sum is not (window, total, count)")
    return sums
