"""Identity: who a device says it is (client id, source address) and what it runs.

Reads the telemetry's `info` object (docs/wire-format.md), per device:

- **identity fields** (`identity_fields`, default `client_id`, `src_ip`): the first value seen
  is learned; after `learn_reports` reports, any other value raises at once (a second
  publisher on the topic, a cloned client id from a new address). `clear_after` reports with
  the learned value in a row clear. A new value that alone has been reported for
  `adopt_after_s` is adopted as the device's new identity (raised once, then accepted).
- **change fields** (`change_fields`, default `firmware`, `config_hash`): a change is held for
  `campaign_window_s`, then it raises, unless it is part of a **campaign**: at least
  `campaign_min_devices` devices of the same kind (and tenant or zone, `campaign_scope`)
  moved to the same new value within `campaign_window_s`. A roll-out moves many devices to one
  version; a tampered device moves alone (or with one accomplice). Either way the new value
  becomes the learned one; a raised change clears `hold_s` later (it is an event, not a
  state). Declared maintenance windows are the alert book's suppressions, matched by
  detector name and zone: this detector does not know about them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from detectors.base import Detector, DetectorParams
from detectors.columns import Columns, columns_without_metrics
from detectors.model import DeviceRef, EvidenceValue, Record, Transition
from detectors.registry import register
from detectors.slots import BoundTable, Floats, Ints, grown
from detectors.streams import StreamClock, forget_devices

InfoField = Literal["client_id", "src_ip", "firmware", "config_hash", "model"]
CampaignKey = tuple[str, str, str, str]  # (scope, kind, field, new value)


class IdentityParams(DetectorParams):
    identity_fields: tuple[InfoField, ...] = ("client_id", "src_ip")
    change_fields: tuple[InfoField, ...] = ("firmware", "config_hash")
    learn_reports: int = Field(default=3, ge=1, le=10_000)
    clear_after: int = Field(default=10, ge=1, le=100_000)
    adopt_after_s: float = Field(default=6 * 3600.0, gt=0)
    campaign_min_devices: int = Field(default=3, ge=2, le=100_000)
    campaign_window_s: float = Field(default=1800.0, gt=0, le=7 * 86_400.0)
    campaign_scope: Literal["tenant", "zone", "fleet"] = "tenant"
    # Campaign values remembered (late devices of a known roll-out stay quiet); oldest dropped.
    max_campaigns: int = Field(default=256, ge=1, le=100_000)
    hold_s: float = Field(default=3600.0, gt=0)


Objects = npt.NDArray[np.object_]
_NONE = np.iinfo(np.int64).max  # no row (in the scratch array of first odd rows by slot)


class _Device:
    __slots__ = ("clean", "firing", "firing_since", "learned", "novel_since", "pending", "reports")

    def __init__(self) -> None:
        self.learned: dict[str, str] = {}
        self.pending: dict[str, str] = {}  # change field → new value awaiting its verdict
        self.reports = 0
        self.firing = ""  # "", "identity" or "change"
        self.firing_since = 0.0
        self.novel_since = 0.0  # since when only the new identity has been reported
        self.clean = 0


@register("identity")
class Identity(Detector):
    params_model = IdentityParams
    params: IdentityParams

    def __init__(self, params: DetectorParams) -> None:
        if not isinstance(params, IdentityParams):
            raise TypeError("Identity needs IdentityParams")
        super().__init__(params)
        self._watched = frozenset(params.identity_fields) | frozenset(params.change_fields)
        self.devices_: dict[DeviceRef, _Device] = {}
        self.clock_ = StreamClock()
        # Changes awaiting their campaign verdict, in deadline order: (deadline, device, field).
        self.pending_: deque[tuple[float, DeviceRef, str]] = deque()
        # Per campaign key, the times (stream) at which devices moved to it, within the window.
        self.moves_: dict[CampaignKey, deque[float]] = {}
        # Campaign keys confirmed (insertion order = age), with when they were confirmed.
        self.campaigns_: dict[CampaignKey, float] = {}
        # Per slot of the device table: an info mapping whose reports are plain (the device
        # is not firing; every watched field it carries is the learned value: a report
        # changes nothing but the count), None if unknown, and its id (0: none; the mapping
        # is held, so no other live object has that id; a mapping handed over is never
        # changed in place); the plain reports not yet added to the device's `reports`
        # (added before its per-record code runs).
        self._table = BoundTable()
        self._plain_info: Objects = np.full(0, None, dtype=object)
        self._plain_id: Ints = np.zeros(0, dtype=np.int64)
        self._uncounted: Ints = np.zeros(0, dtype=np.int64)
        self._scratch: Ints = np.zeros(0, dtype=np.int64)

    def update(self, records: Sequence[Record]) -> list[Transition]:
        if not records:
            return []
        return self.update_columns(columns_without_metrics(records, self._table.for_records()))

    def update_columns(self, columns: Columns) -> list[Transition]:
        """The per-record rules on the rows that are not plain (see `_plain_info`). Rows of
        different devices interact only through the stream time and the campaign verdicts,
        so the batch is cut where a verdict is due; in between, a plain row only counts."""
        self._table.bind(columns.table)
        table = columns.table
        n = len(columns)
        if n == 0:
            return []
        size = len(table)
        self._plain_info = grown(self._plain_info, size, None)
        self._plain_id = grown(self._plain_id, size, 0)
        self._uncounted = grown(self._uncounted, size, 0)
        self._scratch = grown(self._scratch, size, _NONE)
        # The stream time as of each row (fmax: a NaN time leaves it as it is, like `>`).
        now = np.fmax.accumulate(np.fmax(columns.ts, self.clock_.now))
        ids = columns.reports.info_ids()
        window = self.params.campaign_window_s
        changes: list[Transition] = []
        pos = 0
        while pos < n:
            # Up to the first row where the oldest held change is due, and short of the
            # first row where a change held in this stretch could be (now + window).
            end = max(int(np.searchsorted(now, now[pos] + window)), pos + 1)
            if self.pending_:
                end = min(end, int(np.searchsorted(now, self.pending_[0][0])) + 1)
            end = min(end, n)
            self._stretch(columns, ids, now, pos, end, changes)
            last = float(now[end - 1])
            if self.pending_ and self.pending_[0][0] <= last:
                changes += self._verdicts(last)
            pos = end
        self.clock_.now = float(now[-1])
        return changes

    def _stretch(
        self,
        columns: Columns,
        ids: Ints,
        now: Floats,
        lo: int,
        hi: int,
        changes: list[Transition],
    ) -> None:
        """Rows lo..hi-1, in which no verdict is due: plain rows are counted, the others go
        to the per-record code in order."""
        slots = columns.slots[lo:hi]
        plain = ids[lo:hi] == self._plain_id[slots]
        other = np.flatnonzero(~plain)
        if len(other):
            # Another mapping than the plain one: plain too if equal to it (a decoded stream
            # brings a new mapping with every report).
            infos = columns.infos
            given = np.fromiter((infos[lo + j] for j in other.tolist()), object, len(other))
            plain[other] = given == self._plain_info[slots[other]]
        odd = np.flatnonzero(~plain)
        if len(odd):
            # A per-record row may change its device's state: its later rows are not plain.
            scratch = self._scratch
            np.minimum.at(scratch, slots[odd], odd)
            plain &= scratch[slots] >= np.arange(hi - lo)
            scratch[slots[odd]] = _NONE
            odd = np.flatnonzero(~plain)
        counts = np.bincount(slots[plain])
        self._uncounted[: len(counts)] += counts
        records = columns.records
        for j in odd.tolist():
            record, slot = records[lo + j], int(slots[j])
            if record.info:
                change = self._report(record, float(now[lo + j]), slot)
                if change is not None:
                    changes.append(change)
            if self._is_plain(record):
                self._plain_info[slot], self._plain_id[slot] = record.info, id(record.info)
            else:
                self._plain_info[slot], self._plain_id[slot] = None, 0

    def _is_plain(self, record: Record) -> bool:
        """Whether a report carrying the record's info is plain for its device now."""
        state = self.devices_.get(record.device)
        info = record.info
        if state is None or state.firing or not info:
            return False
        learned = state.learned
        for name in self._watched:
            value = info.get(name)
            if value is not None and (name not in learned or learned[name] != value):
                return False
        return True

    def _report(self, record: Record, now: float, slot: int) -> Transition | None:
        p = self.params
        state = self.devices_.get(record.device)
        if state is None:
            state = self.devices_[record.device] = _Device()
        state.reports += int(self._uncounted[slot]) + 1
        self._uncounted[slot] = 0
        learned = state.learned
        mismatch: tuple[str, str, str] | None = None
        # The usual report: every watched field learned, and reported unchanged (two C-level
        # view comparisons instead of two lookups per field).
        if learned.keys() != self._watched or not learned.items() <= record.info.items():
            mismatch = self._compare(record, state, now)
        if state.firing:
            return self._firing(record, state, mismatch, now)
        if mismatch is not None and state.reports > p.learn_reports:
            return self._mismatch(record, state, mismatch, now)
        return None

    def _compare(self, record: Record, state: _Device, now: float) -> tuple[str, str, str] | None:
        """Learn the fields seen for the first time, hold the changes; the first identity
        field that differs from the learned one."""
        p = self.params
        info, learn = record.info, state.learned.setdefault
        mismatch: tuple[str, str, str] | None = None
        for name in p.identity_fields:
            value = info.get(name)
            if value is None:
                continue
            learned = learn(name, value)
            if value != learned and mismatch is None:
                mismatch = (name, learned, value)
        for name in p.change_fields:
            value = info.get(name)
            # The first value seen is learned; only another one is a change to look at.
            if value is not None and learn(name, value) != value:
                self._change(record.device, state, name, value, now)
        return mismatch

    def _firing(
        self, record: Record, state: _Device, mismatch: tuple[str, str, str] | None, now: float
    ) -> Transition | None:
        """A report of a device whose alert fires: it may clear it, or confirm it."""
        p = self.params
        if state.firing == "change" and now - state.firing_since >= p.hold_s:
            return self._clear(record, state, now, "change acknowledged after hold_s")
        if mismatch is not None and state.reports > p.learn_reports:
            return self._mismatch(record, state, mismatch, now)
        if state.firing == "identity":
            state.clean += 1
            state.novel_since = now
            if state.clean >= p.clear_after:
                return self._clear(record, state, now, "reports carry the learned identity again")
        return None

    def _mismatch(
        self, record: Record, state: _Device, what: tuple[str, str, str], now: float
    ) -> Transition | None:
        name, learned, value = what
        state.clean = 0
        if state.firing == "identity":
            if now - state.novel_since < self.params.adopt_after_s:
                return None
            for field in self.params.identity_fields:
                if field in record.info:
                    state.learned[field] = record.info[field]
            return self._clear(record, state, now, f"new {name} {value} adopted")
        if state.firing:
            return None
        state.firing, state.firing_since, state.novel_since = "identity", now, now
        evidence: dict[str, EvidenceValue] = {"field": name, "old": learned, "new": value}
        evidence["learned_from_reports"] = state.reports - 1
        summary = f"{record.device.device_id} reports {name} {value}, learned {learned}"
        return Transition(record.device, True, now, summary, evidence)

    def _change(self, device: DeviceRef, state: _Device, name: str, value: str, now: float) -> None:
        """`value` differs from the learned one: hold it for its campaign verdict."""
        if state.pending.get(name) == value:
            return
        if name not in state.pending:
            self.pending_.append((now + self.params.campaign_window_s, device, name))
        state.pending[name] = value
        self._moved(self._key(device, name, value), now)

    def _key(self, device: DeviceRef, name: str, value: str) -> CampaignKey:
        scope = self.params.campaign_scope
        where = "" if scope == "fleet" else device.tenant
        if scope == "zone":
            where += "/" + device.zone
        return (where, device.kind, name, value)

    def _moved(self, key: CampaignKey, now: float) -> None:
        p = self.params
        moves = self.moves_.setdefault(key, deque())
        moves.append(now)
        while moves and moves[0] < now - p.campaign_window_s:
            moves.popleft()
        if len(moves) >= p.campaign_min_devices and key not in self.campaigns_:
            self.campaigns_[key] = now
            while len(self.campaigns_) > p.max_campaigns:
                del self.campaigns_[next(iter(self.campaigns_))]

    def _verdicts(self, now: float) -> list[Transition]:
        """Decide the held changes whose window closed: a campaign, or one device alone."""
        changes: list[Transition] = []
        while self.pending_ and self.pending_[0][0] <= now:
            _, device, name = self.pending_.popleft()
            state = self.devices_.get(device)
            if state is None or name not in state.pending:
                continue  # forgotten, or decided with another field of the same device
            alone: dict[str, tuple[str, str]] = {}
            for field, value in sorted(state.pending.items()):
                if self._key(device, field, value) not in self.campaigns_:
                    alone[field] = (state.learned[field], value)
                state.learned[field] = value
            state.pending.clear()
            slot = self._table.slot_of(device)
            if slot is not None:  # learned (and maybe firing) changed
                self._plain_info[slot], self._plain_id[slot] = None, 0
            if alone and not state.firing:
                changes.append(self._raise_change(device, state, alone, now))
        self._prune(now)
        return changes

    def _raise_change(
        self, device: DeviceRef, state: _Device, alone: Mapping[str, tuple[str, str]], now: float
    ) -> Transition:
        p = self.params
        state.firing, state.firing_since = "change", now
        evidence: dict[str, EvidenceValue] = {}
        for field, (old, new) in alone.items():
            evidence[f"{field}_old"], evidence[f"{field}_new"] = old, new
        evidence["campaign_rule"] = (
            f">= {p.campaign_min_devices} devices of one {p.campaign_scope} and kind"
            f" within {p.campaign_window_s:g} s"
        )
        what = ", ".join(f"{f} {old} -> {new}" for f, (old, new) in alone.items())
        summary = f"{device.device_id} changed {what}, alone (no roll-out campaign)"
        return Transition(device, True, now, summary, evidence)

    def _clear(self, record: Record, state: _Device, now: float, reason: str) -> Transition:
        state.firing, state.clean = "", 0
        summary = f"{record.device.device_id}: {reason}"
        return Transition(record.device, False, now, summary, {"reason": reason})

    def _prune(self, now: float) -> None:
        horizon = now - self.params.campaign_window_s
        for key in [k for k, moves in self.moves_.items() if not moves or moves[-1] < horizon]:
            del self.moves_[key]

    def tracked_devices(self) -> int:
        return len(self.devices_)

    def forget(self, device_ids: set[str]) -> None:
        forget_devices(self.devices_, device_ids)
        self.pending_ = deque(e for e in self.pending_ if e[1].device_id not in device_ids)
        slots = self._table.slots_of(device_ids)
        slots = slots[slots < len(self._uncounted)]
        self._plain_info[slots], self._plain_id[slots] = None, 0
        self._uncounted[slots] = 0
        self._table.release(device_ids)

    def _count(self) -> None:
        """Add the plain reports not yet counted to their devices' `reports`."""
        table = self._table.table
        for slot in np.flatnonzero(self._uncounted).tolist():
            ref = table.refs[slot] if table is not None else None
            assert ref is not None  # only a device with a slot has plain reports
            self.devices_[ref].reports += int(self._uncounted[slot])
        self._uncounted[:] = 0

    def state_dict(self) -> dict[str, Any]:
        self._count()
        return super().state_dict()

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)
        self._plain_info[:], self._plain_id[:] = None, 0
        self._uncounted[:] = 0
