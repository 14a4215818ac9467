"""Where the sun is over Lyon: altitude, sunrise and sunset (NOAA's low-precision formulas).

Accurate to a couple of minutes, which is all street lighting needs. Everything is vectorised.
"""

from __future__ import annotations

import functools

import numpy as np

from simulators.geography import LYON_LAT, LYON_LON

DAY_S = 86_400
# Sunrise/sunset: the sun's upper limb on the horizon, refraction included.
_HORIZON_DEG = -0.833
_PHI = np.radians(LYON_LAT)
_J2000 = 946_684_800  # 2000-01-01T00:00Z
_YEAR_S = 365.2422 * DAY_S
# Unix days covered by the cumulative-night table (2000-01-01 .. 2100-01-01).
FIRST_DAY = 10_957
LAST_DAY = 47_482


def _declination_and_eot(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solar declination (radians) and equation of time (minutes) at Unix times `t`."""
    g = 2.0 * np.pi * (((t - _J2000) % _YEAR_S) / _YEAR_S)
    decl = (
        0.006918
        - 0.399912 * np.cos(g)
        + 0.070257 * np.sin(g)
        - 0.006758 * np.cos(2 * g)
        + 0.000907 * np.sin(2 * g)
        - 0.002697 * np.cos(3 * g)
        + 0.00148 * np.sin(3 * g)
    )
    eot = 229.18 * (
        0.000075
        + 0.001868 * np.cos(g)
        - 0.032077 * np.sin(g)
        - 0.014615 * np.cos(2 * g)
        - 0.040849 * np.sin(2 * g)
    )
    return decl, eot


def sin_altitude(t: np.ndarray) -> np.ndarray:
    """Sine of the sun's altitude above Lyon's horizon at Unix times `t`."""
    decl, eot = _declination_and_eot(t)
    solar_minutes = (t % DAY_S) / 60.0 + eot + 4.0 * LYON_LON
    hour_angle = np.radians(solar_minutes / 4.0 - 180.0)
    return np.asarray(
        np.sin(_PHI) * np.sin(decl) + np.cos(_PHI) * np.cos(decl) * np.cos(hour_angle)
    )


def sunrise_sunset(day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unix times of sunrise and sunset on Unix day numbers `day` (days since 1970-01-01)."""
    noon_guess = day.astype(np.float64) * DAY_S + DAY_S / 2
    decl, eot = _declination_and_eot(noon_guess)
    cos_h = (np.sin(np.radians(_HORIZON_DEG)) - np.sin(_PHI) * np.sin(decl)) / (
        np.cos(_PHI) * np.cos(decl)
    )
    half_day_s = np.degrees(np.arccos(np.clip(cos_h, -1.0, 1.0))) * 240.0
    solar_noon = day.astype(np.float64) * DAY_S + (720.0 - 4.0 * LYON_LON - eot) * 60.0
    return solar_noon - half_day_s, solar_noon + half_day_s


def night_s(day: np.ndarray) -> np.ndarray:
    """Seconds from sunset on Unix day `day` to sunrise on the next day."""
    _, sunset = sunrise_sunset(day)
    sunrise_next, _ = sunrise_sunset(day + 1)
    return np.asarray(sunrise_next - sunset)


@functools.cache
def _night_cumsum() -> np.ndarray:
    # Entry i: total night seconds of the nights starting on days FIRST_DAY .. FIRST_DAY+i-1.
    nights = night_s(np.arange(FIRST_DAY, LAST_DAY))
    return np.concatenate(([0.0], np.cumsum(nights)))


def nights_between(first_day: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Total night seconds of the nights starting on Unix days first_day .. day-1.

    A table lookup, so lamp burning hours stay a pure function of time and cost O(1).
    """
    table = _night_cumsum()
    return np.asarray(table[day - FIRST_DAY] - table[first_day - FIRST_DAY])
