"""Street lights: on from dusk to dawn, dimmed late at night, burning hours that only go up."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simulators import catalog, localtime, sun
from simulators.fleet import Device
from simulators.telemetry.base import Columns, TelemetryModel

# Lamps switch on this long after sunset and off as long before sunrise (astronomical clocks
# and photocells are set differently, lamp by lamp).
_MAX_SWITCH_OFFSET_S = 900.0
# Night-time dimming programme, Lyon wall clock.
_DIM_FROM_H, _DIM_UNTIL_H = 23.0, 5.0
_STANDBY_W = 0.6  # the node controller never sleeps
_THERMAL_TAU_S = 1_200.0
# Lamps were installed between 2012-01-01 and 2024-01-01 (Unix days) and are replaced, counter
# reset, every 12 to 20 years: burning hours stay plausible whatever year is simulated.
_INSTALLED_FROM_DAY, _INSTALLED_UNTIL_DAY = 15_340, 19_723
_LIFETIME_DAYS = (12 * 365, 20 * 365)
# A lighting "night cycle" runs noon to noon UTC: sunset and the next sunrise fall inside it.
_CYCLE_START_S = 43_200


def ambient_c(t: np.ndarray) -> np.ndarray:
    """Lyon's typical air temperature: 3 °C mid-January, 22 °C mid-July, warmest at 15:00."""
    # Unix days modulo a year track the day of year (day 197 = 16 July) to within a day.
    season = np.cos(2.0 * np.pi * (t / sun.DAY_S - 197.0) / 365.2422)
    return 12.5 + 9.5 * season + 4.5 * np.cos(2.0 * np.pi * (localtime.local_hour(t) - 15.0) / 24.0)


class Lighting(TelemetryModel):
    def __init__(self, devices: Sequence[Device], seed: int) -> None:
        super().__init__(devices, seed)
        lamps = {m.name: m for m in catalog.LAMP_MODELS}
        self.nominal_w = self.per_model({n: m.nominal_w for n, m in lamps.items()})
        self.street_lux = self.per_model({n: m.street_lux for n, m in lamps.items()})
        self.night_dim = self.per_model({n: m.night_dim_pct for n, m in lamps.items()})
        self.temp_rise = self.per_model({n: m.temp_rise_c for n, m in lamps.items()})
        self.switch_offset = self.trait(1, 0.0, _MAX_SWITCH_OFFSET_S)
        self.installed_day = np.floor(
            self.trait(2, _INSTALLED_FROM_DAY, _INSTALLED_UNTIL_DAY)
        ).astype(np.int64)
        self.lifetime_days = np.floor(self.trait(5, *_LIFETIME_DAYS)).astype(np.int64)
        # Driver losses and the spread of a production batch.
        self.efficiency = self.trait(3, 1.03, 1.09)
        self.site_bias_c = self.trait(4, -1.5, 1.5)

    def metrics(self, rows: np.ndarray, t: np.ndarray, report: np.ndarray) -> Columns:
        offset = self.switch_offset[rows]
        cycle = np.floor_divide(t - _CYCLE_START_S, sun.DAY_S).astype(np.int64)
        this_sunrise, this_sunset = sun.sunrise_sunset(cycle)
        next_sunrise, _ = sun.sunrise_sunset(cycle + 1)
        on_at, off_at = this_sunset + offset, next_sunrise - offset
        on = (t >= on_at) & (t < off_at)

        hour = localtime.local_hour(t)
        dimmed = (hour >= _DIM_FROM_H) | (hour < _DIM_UNTIL_H)
        level = np.where(on, np.where(dimmed, self.night_dim[rows], 100.0), 0.0)
        load = level / 100.0
        jitter = self.normal(rows, report, 1)
        power = np.where(
            on,
            self.nominal_w[rows] * load * self.efficiency[rows] * (1 + 0.01 * jitter),
            _STANDBY_W + 0.05 * jitter,
        )
        lux = self.street_lux[rows] * load * (1 + 0.03 * self.normal(rows, report, 2))

        # Warms towards its load's temperature after switch-on, cools after switch-off.
        last_off = np.where(t >= off_at, off_at, this_sunrise + offset)
        heat = np.where(
            on,
            load * (1 - np.exp(-(t - on_at) / _THERMAL_TAU_S)),
            np.exp(-np.maximum(t - last_off, 0.0) / _THERMAL_TAU_S),
        )
        temp = (
            ambient_c(t)
            + self.site_bias_c[rows]
            + self.temp_rise[rows] * heat
            + 0.3 * self.normal(rows, report, 3)
        )

        first, life = self.installed_day[rows], self.lifetime_days[rows]
        installed = np.maximum(first + (cycle - first) // life * life, sun.FIRST_DAY)
        # Every full night since installation, each shortened by the lamp's switch offsets,
        # plus the part of tonight already burnt.
        past_nights = sun.nights_between(np.minimum(installed, cycle), cycle)
        past_nights -= 2 * offset * np.maximum(cycle - installed, 0)
        tonight = np.clip(t - on_at, 0.0, off_at - on_at) * (cycle >= installed)
        return {
            "on": on.astype(np.int64),
            "dim_pct": np.round(level, 1),
            "power_w": np.round(np.maximum(power, 0.0), 1),
            "lux": np.round(lux, 1),
            "driver_temp_c": np.round(temp, 1),
            "burning_hours": np.round((past_nights + tonight) / 3600.0, 2),
        }
