"""Feature windows gathered for training, in bounded memory.

Windows come from `detectors.learned.WindowBuilder` (the detector's own code). At most
`max_windows` are kept: beyond that a uniform reservoir sample (Vitter's algorithm R, seeded),
so a week of a large fleet fits in memory and the sample stays representative of the span.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors.learned import Window
from detectors.model import DeviceRef


@dataclass(frozen=True)
class Arrays:
    """Windows as arrays, sorted by device then time (what calibration replays)."""

    features: npt.NDArray[np.float64]  # (n, features)
    device: npt.NDArray[np.int64]  # (n,) index into `devices`
    start: npt.NDArray[np.int64]  # (n,) window index
    devices: tuple[DeviceRef, ...]

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def subset(self, mask: npt.NDArray[np.bool_]) -> Arrays:
        return Arrays(self.features[mask], self.device[mask], self.start[mask], self.devices)


class WindowSet:
    """Collects scorable windows (unscorable ones are only counted)."""

    def __init__(self, max_windows: int, seed: int = 0) -> None:
        self.max_windows = max_windows
        self._rng = np.random.default_rng(seed)
        self._rows: list[tuple[int, int, list[float]]] = []
        self._device_ids: dict[DeviceRef, int] = {}
        self.seen = 0  # scorable windows offered
        self.unscorable = 0

    def add(self, window: Window) -> None:
        if window.features is None:
            self.unscorable += 1
            return
        index = self._device_ids.setdefault(window.device, len(self._device_ids))
        row = (index, window.start, window.features)
        self.seen += 1
        if len(self._rows) < self.max_windows:
            self._rows.append(row)
            return
        j = int(self._rng.integers(self.seen))
        if j < self.max_windows:
            self._rows[j] = row

    def extend(self, windows: Iterable[Window]) -> None:
        for w in windows:
            self.add(w)

    @property
    def sampled(self) -> bool:
        return self.seen > len(self._rows)

    def arrays(self) -> Arrays:
        rows = sorted(self._rows, key=lambda r: (r[0], r[1]))
        width = len(rows[0][2]) if rows else 0
        return Arrays(
            np.array([r[2] for r in rows], dtype=np.float64).reshape(len(rows), width),
            np.array([r[0] for r in rows], dtype=np.int64),
            np.array([r[1] for r in rows], dtype=np.int64),
            tuple(self._device_ids),
        )
