"""Per-device state held in arrays: each device a slot (a small int), given by a `DeviceTable`
that the engine's detectors share.

A detector whose state changes on every report keeps it in arrays indexed by slot, so that a
whole batch is read and written with a few array operations (see detectors/columns.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import numpy.typing as npt

from detectors.model import DeviceRef

if TYPE_CHECKING:
    from detectors.columns import Reports

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False, slots=True)
class KeySpace:
    """A producer's devices, numbered (the simulator's fleet): by number, each one's
    DeviceRef, info object and that object's `id()`. One space serves all of a producer's
    reports, so a table maps its numbers to slots once, not a DeviceRef per row."""

    refs: Sequence[DeviceRef]
    infos: Sequence[Mapping[str, str]]  # held so that `info_ids` stay these objects' ids
    info_ids: Ints


class DeviceTable:
    """A slot (a small int) per device, for per-device state held in arrays.

    Slots of forgotten devices are reused: the table never holds more slots than devices
    live at once, however many ids an attacker makes up over time. Each slot's kind is
    kept as a small int too (`kind_codes`, names in `kind_names`), for routing rows by kind
    without reading a DeviceRef per row."""

    __slots__ = (
        "_code_of_kind",
        "_free",
        "_slot_of_key",
        "_space",
        "kind_codes",
        "kind_names",
        "refs",
        "slot_of",
    )

    def __init__(self) -> None:
        self.slot_of: dict[DeviceRef, int] = {}
        self.refs: list[DeviceRef | None] = []  # by slot; None: free
        self._free: list[int] = []
        self.kind_codes: Ints = np.zeros(0, dtype=np.int64)  # by slot; -1: free
        self.kind_names: list[str] = []  # by code
        self._code_of_kind: dict[str, int] = {}
        # The last key space seen (see `slots_of_reports`), and its numbers' slots (-1: none).
        self._space: KeySpace | None = None
        self._slot_of_key: Ints = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        """The number of slots (free ones too): per-device arrays need this length."""
        return len(self.refs)

    def slots(self, refs: Sequence[DeviceRef]) -> Ints:
        """Each device's slot, new devices given one."""
        out = list(map(self.slot_of.get, refs, repeat(-1)))
        if -1 in out:
            for i, slot in enumerate(out):
                if slot == -1:
                    out[i] = self._assign(refs[i])
        return np.array(out, dtype=np.int64)

    def slots_of_reports(self, reports: Reports) -> Ints:
        """`slots(reports.refs)`; by the producer's numbers where it gave them."""
        keys = reports.keys
        if keys is None:
            return self.slots(reports.refs)
        if keys.space is not self._space:
            self._space = keys.space
            self._slot_of_key = np.full(len(keys.space.refs), -1, dtype=np.int64)
        numbered = keys.rows >= 0
        slots = np.where(numbered, self._slot_of_key[keys.rows], -1)
        missing = np.flatnonzero(slots < 0)
        if len(missing):
            refs = reports.refs
            got = self.slots([refs[i] for i in missing.tolist()])
            slots[missing] = got
            keep = numbered[missing]
            self._slot_of_key[keys.rows[missing][keep]] = got[keep]
        return slots

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
        self.kind_codes = grown(self.kind_codes, slot + 1, -1)
        self.kind_codes[slot] = self._code(ref.kind)
        return slot

    def _code(self, kind: str) -> int:
        code = self._code_of_kind.get(kind)
        if code is None:
            code = self._code_of_kind[kind] = len(self.kind_names)
            self.kind_names.append(kind)
        return code

    def release(self, device_ids: set[str]) -> list[int]:
        """Free the slots of these device ids; returns them (detectors reset their state)."""
        freed = [slot for ref, slot in self.slot_of.items() if ref.device_id in device_ids]
        for slot in freed:
            ref = self.refs[slot]
            assert ref is not None
            del self.slot_of[ref]
            self.refs[slot] = None
        self.kind_codes[freed] = -1
        self._slot_of_key[np.isin(self._slot_of_key, freed)] = -1
        self._free += freed
        if len(self.kind_names) > 2 * len(self.slot_of) + 16:
            self._recode_kinds()  # kinds of forgotten devices only: names stay bounded
        return freed

    def _recode_kinds(self) -> None:
        self.kind_names, self._code_of_kind = [], {}
        self.kind_codes[:] = -1
        for ref, slot in self.slot_of.items():
            self.kind_codes[slot] = self._code(ref.kind)


class BoundTable:
    """The device table a detector's per-slot arrays are indexed by: the first one it is
    given (the engine's), or its own for callers of `update(records)`; another is refused."""

    __slots__ = ("own", "table")

    def __init__(self) -> None:
        self.table: DeviceTable | None = None
        self.own = False  # made for `update`: the detector frees its slots itself

    def bind(self, table: DeviceTable, *, own: bool = False, over_own: bool = False) -> bool:
        """Takes `table` if none is bound yet (or, with `over_own`, in place of a table of
        the detector's own, whose state the detector moves over); True then (the detector
        places in the new slots any state it holds outside them)."""
        if table is self.table:
            return False
        if self.table is not None and not (over_own and self.own):
            raise ValueError("this detector's state is indexed by another device table")
        self.table, self.own = table, own
        return True

    def for_records(self) -> DeviceTable:
        """The bound table, or one of the detector's own if none is bound yet."""
        if self.table is None:
            self.bind(DeviceTable(), own=True)
        assert self.table is not None
        return self.table

    def slot_of(self, device: DeviceRef) -> int | None:
        return None if self.table is None else self.table.slot_of.get(device)

    def slots_of(self, device_ids: set[str]) -> Ints:
        """The slots of these device ids (to reset their state before the table frees them)."""
        found = [] if self.table is None else self.table.slot_of.items()
        return np.array([s for ref, s in found if ref.device_id in device_ids], dtype=np.int64)

    def release(self, device_ids: set[str]) -> None:
        """Free these devices' slots if the table is the detector's own (the engine frees
        its table's slots itself, after every detector forgot them)."""
        if self.own and self.table is not None:
            self.table.release(device_ids)


_Cell = TypeVar("_Cell", bound=np.generic)


def grown(array: npt.NDArray[_Cell], size: int, fill: object) -> npt.NDArray[_Cell]:
    """`array` extended to at least `size` entries (rows, for a matrix) with `fill` (by
    doubling: amortized)."""
    if len(array) >= size:
        return array
    out = np.full((max(size, 2 * len(array), 64), *array.shape[1:]), fill, dtype=array.dtype)
    out[: len(array)] = array
    return out
