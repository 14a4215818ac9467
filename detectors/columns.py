"""A batch of records seen as columns, for detectors that test a whole batch at once.

Most reports are uneventful: no threshold crossed, the next sequence number, a steady clock.
A detector that can tell so for a whole batch with a few array operations (`update_columns`)
runs its per-record code only on the rows that matter, so there is one implementation of its
rules. `Columns` gives it the batch's devices as small integers (slots, from a `DeviceTable`
shared by the engine's detectors), times, sequence numbers and metric values.

Metrics are kept in blocks of rows that carry the same metric names in the same order (a
fleet has a few such layouts); a column is assembled from the blocks on demand. Blocks keep
memory bounded whatever names hostile payloads bring: never a rows x all-names matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors.model import DeviceRef, Record

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

NO_SEQ = -1  # a record without `seq` (a decoded seq is never negative)


class DeviceTable:
    """A slot (a small int) per device, for per-device state held in arrays.

    Slots of forgotten devices are reused: the table never holds more slots than devices
    live at once, however many ids an attacker makes up over time."""

    __slots__ = ("_free", "refs", "slot_of")

    def __init__(self) -> None:
        self.slot_of: dict[DeviceRef, int] = {}
        self.refs: list[DeviceRef | None] = []  # by slot; None: free
        self._free: list[int] = []

    def __len__(self) -> int:
        """The number of slots (free ones too): per-device arrays need this length."""
        return len(self.refs)

    def slots(self, refs: Sequence[DeviceRef]) -> Ints:
        """Each device's slot, new devices given one."""
        slot_of = self.slot_of
        out = [slot_of.get(ref, -1) for ref in refs]
        if -1 in out:
            for i, slot in enumerate(out):
                if slot == -1:
                    out[i] = self._assign(refs[i])
        return np.array(out, dtype=np.int64)

    def _assign(self, ref: DeviceRef) -> int:
        slot = self.slot_of.get(ref)  # the same new device twice in one batch
        if slot is not None:
            return slot
        if self._free:
            slot = self._free.pop()
            self.refs[slot] = ref
        else:
            slot = len(self.refs)
            self.refs.append(ref)
        self.slot_of[ref] = slot
        return slot

    def release(self, device_ids: set[str]) -> list[int]:
        """Free the slots of these device ids; returns them (detectors reset their state)."""
        freed = [slot for ref, slot in self.slot_of.items() if ref.device_id in device_ids]
        for slot in freed:
            ref = self.refs[slot]
            assert ref is not None
            del self.slot_of[ref]
            self.refs[slot] = None
        self._free += freed
        return freed


@dataclass(frozen=True, slots=True)
class Block:
    """Rows of a batch that carry the same metric names, in that order."""

    rows: Ints
    names: tuple[str, ...]
    values: Floats  # len(rows) x len(names)


@dataclass(frozen=True, slots=True)
class Columns:
    """One batch of records, in arrival order, with its columns."""

    records: Sequence[Record]
    table: DeviceTable
    slots: Ints
    ts: Floats
    seq: Ints  # NO_SEQ where a record has none
    blocks: tuple[Block, ...]

    @classmethod
    def of(cls, records: Sequence[Record], table: DeviceTable) -> Columns:
        n = len(records)
        slots = table.slots([r.device for r in records])
        ts = np.fromiter((r.ts for r in records), dtype=np.float64, count=n)
        seq = np.fromiter(
            (NO_SEQ if r.seq is None else r.seq for r in records), dtype=np.int64, count=n
        )
        layouts: dict[tuple[str, ...], list[int]] = {}
        for i, record in enumerate(records):
            names = tuple(record.metrics)
            rows = layouts.get(names)
            if rows is None:
                layouts[names] = [i]
            else:
                rows.append(i)
        blocks = []
        for names, rows in layouts.items():
            values = [list(records[i].metrics.values()) for i in rows]
            matrix = np.array(values, dtype=np.float64).reshape(len(rows), len(names))
            blocks.append(Block(np.array(rows, dtype=np.int64), names, matrix))
        return cls(records, table, slots, ts, seq, tuple(blocks))

    def __len__(self) -> int:
        return len(self.records)

    def column(self, name: str) -> Floats:
        """A metric's values by row; NaN where a record does not carry it (a decoded metric
        is never NaN: the decoder rejects non-finite numbers)."""
        out = np.full(len(self.records), np.nan)
        for block in self.blocks:
            if name in block.names:
                out[block.rows] = block.values[:, block.names.index(name)]
        return out

    def select(self, rows: Ints) -> Columns:
        """The given rows (ascending), as a batch of their own."""
        if len(rows) == len(self.records):
            return self
        new_index = np.full(len(self.records), -1, dtype=np.int64)
        new_index[rows] = np.arange(len(rows), dtype=np.int64)
        blocks = []
        for block in self.blocks:
            moved = new_index[block.rows]
            keep = moved >= 0
            if keep.any():
                blocks.append(Block(moved[keep], block.names, block.values[keep]))
        records = [self.records[i] for i in rows.tolist()]
        return Columns(
            records, self.table, self.slots[rows], self.ts[rows], self.seq[rows], tuple(blocks)
        )

    def segments(self) -> list[slice]:
        """The batch cut into runs of consecutive rows where no device appears twice, in
        order: within a run, per-device updates may be applied to all rows at once."""
        n = len(self.slots)
        previous = _previous_occurrence(self.slots)
        out = []
        start = 0
        while start < n:
            again = np.flatnonzero(previous[start:] >= start)
            end = start + int(again[0]) if len(again) else n
            out.append(slice(start, end))
            start = end
        return out


def _previous_occurrence(slots: Ints) -> Ints:
    """Per row, the row of the same device's previous record in the batch, or -1."""
    order = np.argsort(slots, kind="stable")
    ordered = slots[order]
    previous = np.full(len(slots), -1, dtype=np.int64)
    same = ordered[1:] == ordered[:-1]
    previous[order[1:][same]] = order[:-1][same]
    return previous


def grown(array: npt.NDArray[np.generic], size: int, fill: object) -> npt.NDArray[np.generic]:
    """`array` extended to at least `size` entries with `fill` (by doubling: amortized)."""
    if len(array) >= size:
        return array
    out = np.full(max(size, 2 * len(array), 64), fill, dtype=array.dtype)
    out[: len(array)] = array
    return out
