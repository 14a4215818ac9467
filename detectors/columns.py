"""A batch of records seen as columns, for detectors that test a whole batch at once.

Most reports are uneventful: no threshold crossed, the next sequence number, a steady clock.
A detector that can tell so for a whole batch with a few array operations (`update_columns`)
runs its per-record code only on the rows that matter, so there is one implementation of its
rules. `Columns` gives it the batch's devices as small integers (slots, from a `DeviceTable`
shared by the engine's detectors: detectors/slots.py), times, sequence numbers and metric
values.

Metrics are kept in blocks of rows that carry the same metric names in the same order (a
fleet has a few such layouts); a column is assembled from the blocks on demand. Blocks keep
memory bounded whatever names hostile payloads bring: never a rows x all-names matrix.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import TypeVar, overload

import numpy as np

from detectors.model import DeviceRef, Record
from detectors.slots import DeviceTable, Floats, Ints, KeySpace

NO_SEQ = -1  # a record without `seq` (a decoded seq is never negative)


@dataclass(frozen=True, slots=True)
class Keys:
    """Each row's number in `space` (-1: a row the producer did not number, whose device
    and info are only in the reports' own columns)."""

    space: KeySpace
    rows: Ints


@dataclass(frozen=True, slots=True)
class Block:
    """Rows of a batch that carry the same metric names, in that order."""

    rows: Ints
    names: tuple[str, ...]
    values: Floats  # len(rows) x len(names)


@dataclass(frozen=True, slots=True)
class Reports:
    """Decoded telemetry reports as columns, in arrival order, before they are given slots:
    what the simulator hands over without making a Record per report (`given` holds the
    records themselves when the reports were made from records)."""

    refs: Sequence[DeviceRef]
    ts: Floats
    seq: Ints  # NO_SEQ where a report has none
    blocks: tuple[Block, ...]  # rows ascending within each block
    infos: Sequence[Mapping[str, str]]
    given: Sequence[Record] | None = None
    keys: Keys | None = None  # the producer's numbers for the rows' devices, if it gave them

    def info_ids(self) -> Ints:
        """Each row's `id(info)`: rows with the same id carry the very same mapping."""
        if self.keys is None:
            return _ids(self.infos)
        rows = self.keys.rows
        ids = self.keys.space.info_ids[rows]
        unnumbered = np.flatnonzero(rows < 0)
        if len(unnumbered):
            ids[unnumbered] = _ids([self.infos[i] for i in unnumbered.tolist()])
        return ids

    @classmethod
    def of_records(cls, records: Sequence[Record]) -> Reports:
        n = len(records)
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
        refs = [r.device for r in records]
        return cls(refs, ts, seq, tuple(blocks), [r.info for r in records], records)

    def __len__(self) -> int:
        return len(self.ts)

    def record(self, i: int) -> Record:
        """Row `i` as the Record the decoder makes of its payload."""
        if self.given is not None:
            return self.given[i]
        metrics: dict[str, float] = {}
        for block in self.blocks:
            j = int(np.searchsorted(block.rows, i))
            if j < len(block.rows) and block.rows[j] == i:
                metrics = dict(zip(block.names, block.values[j].tolist(), strict=True))
                break
        seq = int(self.seq[i])
        return Record(
            self.refs[i], float(self.ts[i]), metrics, None if seq == NO_SEQ else seq, self.infos[i]
        )

    def records(self) -> list[Record]:
        """Every row as a Record (as `record`, but block by block)."""
        if self.given is not None:
            return list(self.given)
        metrics: list[dict[str, float] | None] = [None] * len(self)
        for block in self.blocks:
            names = block.names
            for row, values in zip(block.rows.tolist(), block.values.tolist(), strict=True):
                metrics[row] = dict(zip(names, values, strict=True))
        seq = [None if s == NO_SEQ else s for s in self.seq.tolist()]
        return [
            Record(ref, ts, {} if m is None else m, n, info)
            for ref, ts, m, n, info in zip(
                self.refs, self.ts.tolist(), metrics, seq, self.infos, strict=True
            )
        ]

    def slice(self, lo: int, hi: int) -> Reports:
        """Rows lo..hi-1."""
        blocks = []
        for block in self.blocks:
            a, b = np.searchsorted(block.rows, (lo, hi)).tolist()
            if a < b:
                blocks.append(Block(block.rows[a:b] - lo, block.names, block.values[a:b]))
        given = self.given[lo:hi] if self.given is not None else None
        keys = self.keys
        return Reports(
            self.refs[lo:hi],
            self.ts[lo:hi],
            self.seq[lo:hi],
            tuple(blocks),
            self.infos[lo:hi],
            given,
            None if keys is None else Keys(keys.space, keys.rows[lo:hi]),
        )

    def select(self, rows: Ints) -> Reports:
        """The given rows (ascending)."""
        new_index = np.full(len(self), -1, dtype=np.int64)
        new_index[rows] = np.arange(len(rows), dtype=np.int64)
        blocks = []
        for block in self.blocks:
            moved = new_index[block.rows]
            keep = moved >= 0
            if keep.any():
                blocks.append(Block(moved[keep], block.names, block.values[keep]))
        at = rows.tolist()
        given = _picked(self.given, at) if self.given is not None else None
        keys = self.keys
        return Reports(
            _picked(self.refs, at),
            self.ts[rows],
            self.seq[rows],
            tuple(blocks),
            _picked(self.infos, at),
            given,
            None if keys is None else Keys(keys.space, keys.rows[rows]),
        )

    @staticmethod
    def join(parts: Sequence[Reports]) -> Reports:
        """Parts one after the other."""
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0, *(len(p) for p in parts)]).tolist()
        # One block per layout: a batch made of many runs would otherwise hold hundreds.
        layouts: dict[tuple[str, ...], list[Block]] = {}
        for part, offset in zip(parts, offsets, strict=False):
            for b in part.blocks:
                layouts.setdefault(b.names, []).append(Block(b.rows + offset, b.names, b.values))
        blocks = tuple(
            same[0]
            if len(same) == 1
            else Block(
                np.concatenate([b.rows for b in same]),
                names,
                np.concatenate([b.values for b in same]),
            )
            for names, same in layouts.items()
        )
        refs: list[DeviceRef] = []
        infos: list[Mapping[str, str]] = []
        for part in parts:
            refs += part.refs
            infos += part.infos
        given = None
        if all(p.given is not None for p in parts):
            given = [r for p in parts for r in p.given or ()]
        return Reports(
            refs,
            np.concatenate([p.ts for p in parts]),
            np.concatenate([p.seq for p in parts]),
            blocks,
            infos,
            given,
            _joined_keys(parts),
        )


def _ids(objects: Sequence[object]) -> Ints:
    return np.fromiter(map(id, objects), dtype=np.int64, count=len(objects))


def _joined_keys(parts: Sequence[Reports]) -> Keys | None:
    """The parts' keys one after the other (parts without: rows not numbered), when they
    number in one space."""
    spaces = {id(p.keys.space): p.keys.space for p in parts if p.keys is not None}
    if len(spaces) != 1:
        return None
    (space,) = spaces.values()
    rows = [
        p.keys.rows if p.keys is not None else np.full(len(p), -1, dtype=np.int64) for p in parts
    ]
    return Keys(space, np.concatenate(rows))


_Item = TypeVar("_Item")


def _picked(items: Sequence[_Item], at: list[int]) -> Sequence[_Item]:
    """items[i] for i in `at`, gathered in C (itemgetter of two or more gives a tuple)."""
    return itemgetter(*at)(items) if len(at) > 1 else [items[i] for i in at]


class Rows(Sequence[Record]):
    """The records of some reports, made only when asked for."""

    __slots__ = ("_reports",)

    def __init__(self, reports: Reports) -> None:
        self._reports = reports

    def __len__(self) -> int:
        return len(self._reports)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._reports.records())

    @overload
    def __getitem__(self, i: int) -> Record: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Record]: ...
    def __getitem__(self, i: int | slice) -> Record | Sequence[Record]:
        if isinstance(i, slice):
            return self._reports.records()[i]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._reports.record(i)


@dataclass(frozen=True, slots=True)
class Columns:
    """One batch of reports, in arrival order, with the devices' slots in `table`."""

    reports: Reports
    table: DeviceTable
    slots: Ints

    @classmethod
    def of(cls, records: Sequence[Record], table: DeviceTable) -> Columns:
        return cls.of_reports(Reports.of_records(records), table)

    @classmethod
    def of_reports(cls, reports: Reports, table: DeviceTable) -> Columns:
        return cls(reports, table, table.slots_of_reports(reports))

    @property
    def records(self) -> Sequence[Record]:
        """The rows as Records (made on demand when the reports came as columns)."""
        given = self.reports.given
        return given if given is not None else Rows(self.reports)

    @property
    def ts(self) -> Floats:
        return self.reports.ts

    @property
    def seq(self) -> Ints:
        return self.reports.seq

    @property
    def blocks(self) -> tuple[Block, ...]:
        return self.reports.blocks

    @property
    def infos(self) -> Sequence[Mapping[str, str]]:
        return self.reports.infos

    def __len__(self) -> int:
        return len(self.reports)

    def column(self, name: str) -> Floats:
        """A metric's values by row; NaN where a record does not carry it (a decoded metric
        is never NaN: the decoder rejects non-finite numbers)."""
        out = np.full(len(self), np.nan)
        for block in self.blocks:
            if name in block.names:
                out[block.rows] = block.values[:, block.names.index(name)]
        return out

    def rows_of_kind(self) -> dict[str, list[int]]:
        """The rows by device kind, in order."""
        codes = self.table.kind_codes[self.slots]
        present = np.flatnonzero(np.bincount(codes)).tolist()
        names = self.table.kind_names
        return {names[c]: np.flatnonzero(codes == c).tolist() for c in present}

    def kind_counts(self) -> dict[str, int]:
        """How many rows of each device kind."""
        counts = np.bincount(self.table.kind_codes[self.slots])
        names = self.table.kind_names
        return {names[c]: int(counts[c]) for c in np.flatnonzero(counts).tolist()}

    def select(self, rows: Ints) -> Columns:
        """The given rows (ascending), as a batch of their own."""
        if len(rows) == len(self):
            return self
        return Columns(self.reports.select(rows), self.table, self.slots[rows])

    def segments(self) -> list[slice]:
        """The batch cut into runs of consecutive rows where no device appears twice, in
        order: within a run, per-device updates may be applied to all rows at once."""
        n = len(self.slots)
        previous = _previous_occurrence(self.slots)
        out = []
        start = 0
        # Only a device's second row can cut a run: most rows of a batch are first rows.
        repeats = np.flatnonzero(previous >= 0)
        for i, before in zip(repeats.tolist(), previous[repeats].tolist(), strict=True):
            if before >= start:  # the device's earlier row is in this run: a new run
                out.append(slice(start, i))
                start = i
        if start < n:
            out.append(slice(start, n))
        return out


def columns_without_metrics(records: Sequence[Record], table: DeviceTable) -> Columns:
    """`Columns.of` without the metric blocks, for `update(records)` of a detector that reads
    no metric (building them is most of the cost of `Columns.of`)."""
    n = len(records)
    reports = Reports(
        [r.device for r in records],
        np.fromiter((r.ts for r in records), dtype=np.float64, count=n),
        np.fromiter((NO_SEQ if r.seq is None else r.seq for r in records), np.int64, count=n),
        (),
        [r.info for r in records],
        records,
    )
    return Columns.of_reports(reports, table)


def _previous_occurrence(slots: Ints) -> Ints:
    """Per row, the row of the same device's previous record in the batch, or -1."""
    order = np.argsort(slots, kind="stable")
    ordered = slots[order]
    previous = np.full(len(slots), -1, dtype=np.int64)
    same = ordered[1:] == ordered[:-1]
    previous[order[1:][same]] = order[:-1][same]
    return previous
