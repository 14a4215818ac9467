"""When each device reports: every `cadence_s`, shifted by its own phase.

The pattern of a whole fleet repeats every period (the least common multiple of the cadences, one
minute for the catalog's 10/30/60 s), so one sorted table of that period gives every report of any
time span in order, batch by batch, without a heap or the whole span in memory.
Times are integer milliseconds so that ordering and counters are exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

# A period longer than this many reports per device means cadences that share no rhythm.
_MAX_REPORTS_PER_PERIOD = 10_000


class Schedule:
    def __init__(self, cadence_ms: np.ndarray, phase_ms: np.ndarray) -> None:
        if np.any(cadence_ms <= 0) or np.any(phase_ms < 0) or np.any(phase_ms >= cadence_ms):
            raise ValueError("need cadence > 0 and 0 <= phase < cadence for every device")
        self.cadence_ms = cadence_ms.astype(np.int64)
        self.phase_ms = phase_ms.astype(np.int64)
        # A set, not np.unique: that one imports numpy.ma (~30 ms) on its first call.
        cadences = sorted(set(self.cadence_ms.tolist()))
        self.period_ms = math.lcm(*cadences)
        counts = self.period_ms // self.cadence_ms
        if np.any(counts > _MAX_REPORTS_PER_PERIOD):
            raise ValueError(f"cadences {cadences} ms share no short period")
        devices = np.repeat(np.arange(len(counts)), counts)
        # k-th report of each device inside the period: a ragged arange.
        k = np.arange(len(devices)) - np.repeat(np.cumsum(counts) - counts, counts)
        offsets = self.phase_ms[devices] + k * self.cadence_ms[devices]
        order = np.argsort(offsets, kind="stable")
        self._devices = devices[order]
        self._offsets = offsets[order]

    @property
    def reports_per_period(self) -> int:
        return len(self._offsets)

    def between(self, start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """Devices and times of every report in [start_ms, end_ms), in time order."""
        devices, times = [], []
        for q in range(start_ms // self.period_ms, -(-end_ms // self.period_ms)):
            base = q * self.period_ms
            lo, hi = np.searchsorted(self._offsets, [start_ms - base, end_ms - base])
            devices.append(self._devices[lo:hi])
            times.append(self._offsets[lo:hi] + base)
        if not devices:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(devices), np.concatenate(times)

    def batches(
        self, start_ms: int, end_ms: int, batch_size: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """`between` over consecutive windows of about `batch_size` reports each."""
        per_ms = max(self.reports_per_period, 1) / self.period_ms
        window_ms = max(int(batch_size / per_ms), 1)
        for lo in range(start_ms, end_ms, window_ms):
            devices, times = self.between(lo, min(lo + window_ms, end_ms))
            if len(devices):
                yield devices, times

    def report_number(self, devices: np.ndarray, times_ms: np.ndarray) -> np.ndarray:
        """How many reports each device made since the Unix epoch: the report's identity."""
        return np.asarray((times_ms - self.phase_ms[devices]) // self.cadence_ms[devices])

    def first_report_at_or_after(self, t_ms: int) -> np.ndarray:
        """Per device, the number of its first report at or after `t_ms`."""
        return -((self.phase_ms - t_ms) // self.cadence_ms)
