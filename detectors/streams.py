"""Helpers shared by the stream detectors (cadence, integrity, identity, commands, inventory).

Stream time: detectors never read the wall clock. Where a detector needs "now" (a device fell
silent, a window closed) it takes the latest payload time seen across the fleet, record by
record, so that verdicts do not depend on how the stream was cut into batches. One device with
a clock ahead pushes it forward by at most the decoder's `max_future_s` (300 s by default):
thresholds measured on this clock (silence, skew) stay above that.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping, Sequence
from typing import TypeVar

from detectors.model import DeviceRef, Record

V = TypeVar("V")


class StreamClock:
    """The stream's time: the latest record timestamp seen, never going back.

    A detector's per-record loop may keep `now` in a local instead of calling `see` (a call
    per record is a measurable share of a cheap detector's cost): read `clock.now` before
    the loop, `if ts > now: now = ts` per record, write `clock.now = now` after it.
    """

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = float("-inf")

    def see(self, ts: float) -> float:
        self.now = max(self.now, ts)
        return self.now


def forget_devices(states: MutableMapping[DeviceRef, V], device_ids: set[str]) -> None:
    """Drop the entries of these device ids (the agent's device cap evicted them)."""
    for ref in [ref for ref in states if ref.device_id in device_ids]:
        del states[ref]


def stream_start(started: float, clock: StreamClock, records: Sequence[Record]) -> float:
    """The stream's start (`-inf` until the first record): that record's stream time."""
    if started == -math.inf and records:
        return max(clock.now, records[0].ts)
    return started
