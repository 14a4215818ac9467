"""Lyon civil time (Europe/Paris), vectorised over arrays of Unix timestamps.

zoneinfo answers one timestamp at a time; the simulator needs the local hour of every report of a
batch, so the EU summer-time rule (last Sunday of March to last Sunday of October, 01:00 UTC) is
applied directly. Tests compare it with zoneinfo.
"""

from __future__ import annotations

import numpy as np

_DAY = 86_400
_CET = 3_600
_CEST = 7_200
# 1970-01-01 was a Thursday (Monday = 0).
_EPOCH_WEEKDAY = 3


def _last_sunday_0100_utc(year: np.ndarray, month: int) -> np.ndarray:
    first_of_next = (year - 1970).astype("datetime64[Y]").astype("datetime64[M]") + month
    last_day = first_of_next.astype("datetime64[D]").astype(np.int64) - 1
    weekday = (last_day + _EPOCH_WEEKDAY) % 7
    return (last_day - (weekday - 6) % 7) * _DAY + 3_600


def utc_offset_s(t: np.ndarray) -> np.ndarray:
    """Offset of Paris civil time from UTC, seconds, at each Unix time in `t`."""
    year = t.astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970
    summer = (t >= _last_sunday_0100_utc(year, 3)) & (t < _last_sunday_0100_utc(year, 10))
    return np.where(summer, _CEST, _CET)


def local_seconds(t: np.ndarray) -> np.ndarray:
    """Seconds since 1970-01-01 00:00 on Lyon's wall clock."""
    return np.asarray(t + utc_offset_s(t))


def local_hour(t: np.ndarray) -> np.ndarray:
    """Hour of day on Lyon's wall clock, fractional, in [0, 24)."""
    return (local_seconds(t) % _DAY) / 3_600.0


def weekday(t: np.ndarray) -> np.ndarray:
    """Day of week on Lyon's wall clock, Monday = 0 ... Sunday = 6."""
    days = np.floor_divide(local_seconds(t), _DAY).astype(np.int64)
    return np.asarray((days + _EPOCH_WEEKDAY) % 7)
