"""What every telemetry model shares: its devices, their random keys and fixed traits."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from simulators import noise
from simulators.fleet import Device

Columns = dict[str, np.ndarray]


class TelemetryModel(ABC):
    """Metrics of one device sub-type, vectorised over the reports of a batch.

    `metrics(rows, t, report)` is a pure function: `rows` index this model's devices, `t` is each
    report's simulated Unix time and `report` the device's absolute report counter (the key of the
    report's random draws). It returns one column per metric, in wire-format order.

    Hardware traits depend on the device alone; report noise also depends on the run's `seed`.
    """

    def __init__(self, devices: Sequence[Device], seed: int) -> None:
        self.devices = tuple(devices)
        device_keys = np.array([d.noise_key for d in self.devices], dtype=np.uint64)
        self.keys = noise.stream_keys(device_keys, seed)
        self._trait_keys = noise.mix(device_keys)
        self.cadence_s = np.array([d.cadence_s for d in self.devices], dtype=np.float64)

    def trait(self, stream: int, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        """A fixed per-device value drawn uniformly in [low, high)."""
        return low + (high - low) * noise.trait(self._trait_keys, stream)

    def uniform(self, rows: np.ndarray, counter: np.ndarray, stream: int) -> np.ndarray:
        return noise.uniform(self.keys[rows], counter, stream)

    def normal(self, rows: np.ndarray, counter: np.ndarray, stream: int) -> np.ndarray:
        return noise.normal(self.keys[rows], counter, stream)

    def per_model(self, table: dict[str, float]) -> np.ndarray:
        """Per-device lookup of a catalog value keyed by the device's hardware model."""
        return np.array([table[d.model] for d in self.devices], dtype=np.float64)

    @abstractmethod
    def metrics(self, rows: np.ndarray, t: np.ndarray, report: np.ndarray) -> Columns: ...


def bump(hour: np.ndarray, centre: float, width: float) -> np.ndarray:
    """A Gaussian bump over the hour of day, wrapping around midnight."""
    d = (hour - centre + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / width) ** 2)
