"""Mobility sensors: traffic counters, parking sensors and bike-share docks.

All follow the city's rhythm: weekday morning and evening rush hours, quieter weekends.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simulators import localtime
from simulators.fleet import Device
from simulators.telemetry.base import Columns, TelemetryModel, bump

_SATURDAY, _SUNDAY = 5, 6


def traffic_demand(t: np.ndarray) -> np.ndarray:
    """Road traffic relative to a weekday's peak (about 1.0 at 08:00 and 17:45, 0.03 at 03:00)."""
    hour, day = localtime.local_hour(t), localtime.weekday(t)
    weekday = (
        0.02
        + 0.95 * bump(hour, 8.0, 0.9)
        + 0.85 * bump(hour, 17.75, 1.3)
        + 0.45 * bump(hour, 13.0, 2.8)
        + 0.12 * bump(hour, 21.0, 1.5)
    )
    saturday = 0.03 + 0.50 * bump(hour, 15.0, 3.5) + 0.20 * bump(hour, 11.0, 2.0)
    sunday = 0.03 + 0.35 * bump(hour, 15.5, 3.5)
    return np.select([day == _SATURDAY, day == _SUNDAY], [saturday, sunday], weekday)


def parking_demand(t: np.ndarray) -> np.ndarray:
    """Probability that a street parking space is taken."""
    hour, day = localtime.local_hour(t), localtime.weekday(t)
    weekday = 0.35 + 0.50 * bump(hour, 11.0, 3.5) + 0.30 * bump(hour, 20.5, 2.5)
    weekend = 0.45 + 0.35 * bump(hour, 15.0, 4.0)
    return np.clip(np.where(day >= _SATURDAY, weekend, weekday), 0.0, 0.97)


def office_hours(t: np.ndarray) -> np.ndarray:
    """~1 during weekday office hours (08:30-17:30), ~0 otherwise and at weekends."""
    hour, day = localtime.local_hour(t), localtime.weekday(t)
    inside = 1 / (1 + np.exp(-2 * (hour - 8.5))) - 1 / (1 + np.exp(-2 * (hour - 17.5)))
    return np.where(day >= _SATURDAY, 0.0, inside)


class TrafficCounter(TelemetryModel):
    def __init__(self, devices: Sequence[Device], seed: int) -> None:
        super().__init__(devices, seed)
        # From a quiet street to a two-lane boulevard, vehicles per hour at the weekday peak.
        self.peak_vph = np.exp(self.trait(1, np.log(300.0), np.log(2400.0)))
        # Lyon is mostly a 30 km/h city; main roads stay at 50.
        self.limit_kmh = np.where(self.trait(2) < 0.6, 30.0, 50.0)
        # How badly the road saturates at the peak.
        self.congestion = self.trait(3, 0.3, 1.0)

    def metrics(self, rows: np.ndarray, t: np.ndarray, report: np.ndarray) -> Columns:
        demand = traffic_demand(t)
        expected = self.peak_vph[rows] / 3600.0 * self.cadence_s[rows] * demand
        vehicles = np.rint(expected + 1.1 * np.sqrt(expected) * self.normal(rows, report, 1))
        load = demand * self.congestion[rows]
        slowdown = 0.55 * np.clip((load - 0.5) / 0.5, 0.0, 1.0)
        speed = self.limit_kmh[rows] * (0.95 - slowdown) * (1 + 0.06 * self.normal(rows, report, 2))
        occupancy = 100 * (0.015 + 0.35 * load**2) * (1 + 0.1 * self.normal(rows, report, 3))
        return {
            "vehicles": np.maximum(vehicles, 0).astype(np.int64),
            "speed_kmh": np.round(np.maximum(speed, 3.0), 1),
            "occupancy_pct": np.round(np.clip(occupancy, 0.0, 100.0), 1),
        }


class ParkingSensor(TelemetryModel):
    def __init__(self, devices: Sequence[Device], seed: int) -> None:
        super().__init__(devices, seed)
        # A space keeps its state for a stay: from a quick errand to an afternoon.
        self.stay_s = self.trait(1, 900.0, 5_400.0)
        self.stay_phase = self.trait(2)

    def metrics(self, rows: np.ndarray, t: np.ndarray, report: np.ndarray) -> Columns:
        stay_s = self.stay_s[rows]
        stay = np.floor(t / stay_s + self.stay_phase[rows])
        # Decided once per stay, from the demand when the stay began, so the state does not flicker.
        stay_began = (stay - self.stay_phase[rows]) * stay_s
        taken = self.uniform(rows, stay.astype(np.int64), 1) < parking_demand(stay_began)
        return {"occupied": taken.astype(np.int64)}


class BikeDock(TelemetryModel):
    _REFILL_S = 900.0

    def __init__(self, devices: Sequence[Device], seed: int) -> None:
        super().__init__(devices, seed)
        self.capacity = np.floor(self.trait(1, 10.0, 41.0))
        self.broken = np.floor(self.trait(2, 0.0, 3.0))
        # Docks near offices fill up in the morning; docks in residential streets empty out.
        self.role = np.where(self.trait(3) < 0.5, 1.0, -1.0)

    def metrics(self, rows: np.ndarray, t: np.ndarray, report: np.ndarray) -> Columns:
        usable = self.capacity[rows] - self.broken[rows]
        # Riders come and go in bursts: the random part changes every quarter of an hour.
        burst = np.floor(t / self._REFILL_S).astype(np.int64)
        fill = 0.5 + 0.3 * self.role[rows] * office_hours(t) + 0.1 * self.normal(rows, burst, 1)
        bikes = np.rint(np.clip(fill, 0.0, 1.0) * usable)
        return {
            "bikes_available": bikes.astype(np.int64),
            "docks_free": (usable - bikes).astype(np.int64),
        }
