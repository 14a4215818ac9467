"""Inventory: a device that nobody enrolled starts publishing (a rogue device).

A device is *known* when it is in the configured inventory (`inventory`, a list of device ids,
or `inventory_file`, one id per line, read once when the detector is built) or, without an
inventory, when it reported during the learning period: the first `learn_s` seconds of stream
time. A device first seen after that raises once, at its first report, with the evidence; the
device is then remembered as flagged (bounded by `max_new`, oldest dropped) and the alert clears
`hold_s` later (an event: the operator enrols the device or removes it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from pydantic import Field, model_validator

from detectors.base import Detector, DetectorParams
from detectors.columns import Columns, columns_without_metrics
from detectors.model import DeviceRef, Record, Transition
from detectors.registry import register
from detectors.slots import Bools, BoundTable, grown
from detectors.streams import StreamClock

_MAX_INVENTORY = 1_000_000
_MAX_FILE_BYTES = 64 * 1024 * 1024


class InventoryParams(DetectorParams):
    inventory: tuple[str, ...] = Field(default=(), max_length=_MAX_INVENTORY)
    inventory_file: str | None = None
    learn_s: float = Field(default=3600.0, ge=0)
    # Devices learned during the learning period (attackers control ids: the set is bounded).
    max_known: int = Field(default=200_000, ge=1, le=_MAX_INVENTORY)
    max_new: int = Field(default=10_000, ge=1, le=1_000_000)
    hold_s: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _one_source(self) -> InventoryParams:
        if self.inventory and self.inventory_file:
            raise ValueError("give inventory or inventory_file, not both")
        return self


def _read_inventory(path: str) -> frozenset[str]:
    data = Path(path).read_bytes()
    if len(data) > _MAX_FILE_BYTES:
        raise ValueError(f"inventory file {path} is over {_MAX_FILE_BYTES} bytes")
    ids = [line.strip() for line in data.decode("utf-8").splitlines()]
    return frozenset(i for i in ids if i and not i.startswith("#"))


@register("inventory")
class Inventory(Detector):
    params_model = InventoryParams
    params: InventoryParams

    def __init__(self, params: DetectorParams) -> None:
        if not isinstance(params, InventoryParams):
            raise TypeError("Inventory needs InventoryParams")
        super().__init__(params)
        p = params
        self._enrolled = frozenset(p.inventory) or (
            _read_inventory(p.inventory_file) if p.inventory_file else frozenset()
        )
        self.clock_ = StreamClock()
        self.started_ = -math.inf  # the first record's time: the learning period's start
        self.known_: dict[str, None] = {}  # learned ids (insertion-ordered set)
        # Flagged devices: id -> when it raised (0.0 once cleared), oldest first.
        self.new_: dict[str, float] = {}
        self.firing_: dict[str, DeviceRef] = {}
        # Per slot of the device table: the device is known or enrolled (it can never raise:
        # known_ only grows but for forget and load_state, which reset this).
        self._table = BoundTable()
        self._settled: Bools = np.zeros(0, dtype=np.bool_)

    def update(self, records: Sequence[Record]) -> list[Transition]:
        if not records:
            return []
        return self.update_columns(columns_without_metrics(records, self._table.for_records()))

    def update_columns(self, columns: Columns) -> list[Transition]:
        """Only a row whose device is not settled (known or enrolled) can raise or learn; the
        others change nothing but the clock, whose only other effect is clearing alerts due
        (`now - oldest raise >= hold_s`, tested on the clock's column)."""
        self._table.bind(columns.table)
        table = columns.table
        n = len(columns)
        if n == 0:
            return []
        p = self.params
        self._settled = settled = cast(Bools, grown(self._settled, len(table), False))
        # The stream time as of each row (fmax: a NaN time leaves it as it is, like `>`).
        now = np.fmax.accumulate(np.fmax(columns.ts, self.clock_.now))
        # Without an inventory, the learning period from the stream's start (it ends once and
        # for all: time only grows); with one, no learning.
        learn_from = -math.inf
        if not self._enrolled:
            if self.started_ == -math.inf:  # detectors.streams.stream_start, on the column
                self.started_ = max(self.clock_.now, float(columns.ts[0]))
            learn_from = self.started_
        slow = np.flatnonzero(~settled[columns.slots]).tolist()
        changes: list[Transition] = []
        head = self._oldest_firing()
        pos = 0
        for row in [*slow, n]:
            # Clears due on the settled rows before this one: (now - head) only grows.
            while pos < row and head != math.inf:
                due = np.flatnonzero(now[pos:row] - head >= p.hold_s)
                if not len(due):
                    break
                pos += int(due[0])
                changes += self._clears(float(now[pos]))
                head = self._oldest_firing()
                pos += 1
            if row == n:
                break
            at = float(now[row])
            if self._row(columns, row, at, at - learn_from < p.learn_s, changes):
                head = self._oldest_firing()
            if at - head >= p.hold_s:
                changes += self._clears(at)
                head = self._oldest_firing()
            pos = row + 1
        self.clock_.now = float(now[-1])
        return changes

    def _row(
        self, columns: Columns, row: int, now: float, learning: bool, changes: list[Transition]
    ) -> bool:
        """The per-record rule for a device not settled yet; whether it raised."""
        slot = int(columns.slots[row])
        ref = columns.table.refs[slot]
        assert ref is not None
        device_id, known = ref.device_id, self.known_
        if learning and device_id not in known and len(known) < self.params.max_known:
            known[device_id] = None
        if device_id in known or device_id in self._enrolled:
            self._settled[slot] = True  # known_ only grows (but for forget and load_state)
            return False
        if learning or device_id in self.new_:
            return False
        changes.append(self._raise(columns.records[row], now))
        return True

    def _oldest_firing(self) -> float:
        """When the oldest firing alert was raised (+inf: none fires); only it can be due."""
        for device_id in self.firing_:
            return self.new_.get(device_id, -math.inf)
        return math.inf

    def _raise(self, record: Record, now: float) -> Transition:
        p = self.params
        device_id = record.device.device_id
        self.new_[device_id] = now
        self.firing_[device_id] = record.device
        while len(self.new_) > p.max_new:
            oldest = next(iter(self.new_))
            del self.new_[oldest]
            self.firing_.pop(oldest, None)
        if self._enrolled:
            baseline = f"inventory of {len(self._enrolled)} devices"
        else:
            baseline = f"{len(self.known_)} devices seen in the first {p.learn_s:g} s"
        info = record.info
        summary = f"{device_id} is not in the inventory and publishes ({baseline})"
        return Transition(
            record.device,
            True,
            now,
            summary,
            {
                "condition": "unknown device",
                "first_seen": record.ts,
                "client_id": info.get("client_id"),
                "src_ip": info.get("src_ip"),
                "baseline": baseline,
            },
        )

    def _clears(self, now: float) -> list[Transition]:
        # firing_ is in raise order (stream time never goes back): only its head can be due.
        hold = self.params.hold_s
        changes: list[Transition] = []
        while self.firing_:
            device_id, device = next(iter(self.firing_.items()))
            if now - self.new_.get(device_id, -math.inf) < hold:
                break
            del self.firing_[device_id]
            reason = "unknown device acknowledged after hold_s"
            summary = f"{device_id}: {reason}"
            changes.append(Transition(device, False, now, summary, {"reason": reason}))
        return changes

    def is_flagged(self, device_id: str) -> bool:
        return device_id in self.new_

    def tracked_devices(self) -> int:
        return len(self.known_) + len(self.new_)

    def forget(self, device_ids: set[str]) -> None:
        for device_id in device_ids:
            self.known_.pop(device_id, None)
            self.new_.pop(device_id, None)
            self.firing_.pop(device_id, None)
        slots = self._table.slots_of(device_ids)
        self._settled[slots[slots < len(self._settled)]] = False
        self._table.release(device_ids)

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)
        self._settled[:] = False  # the loaded known_ decides again
