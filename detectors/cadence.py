"""Cadence: each device's reporting interval is learned; silences and floods raise.

- **interval**: an exponentially weighted mean of the log of the gaps between a device's
  reports (payload time). Gaps shorter than half the interval (duplicates, bursts) are not
  learned, they feed the flood bucket; longer ones are clipped at 3 intervals (a missing
  report moves the estimate a little, an outage barely).
- **silence**: no report for `silence_factor` intervals and at least `min_silence_s`, measured
  on the stream's time (detectors.streams.StreamClock), never the wall clock. A device found
  silent while the zone's devices of every *other* kind went quiet at the same moment is part
  of a zone outage (a power cut: lights, sensors and cameras together) and does not raise; a
  silence that the other kinds do not share (cameras dark, lights on) does. Clears on the next
  report.
- **flood**: a leaky bucket per device, +1 per message, draining `flood_factor` messages per
  learned interval of payload time; past `flood_burst` messages of excess it raises, below
  half of that it clears. A flood that lasts `adopt_after_s` is taken as the device's new
  interval (raised once, then adopted).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field, model_validator

from detectors.base import Detector, DetectorParams
from detectors.model import DeviceRef, EvidenceValue, Record, Transition
from detectors.registry import register
from detectors.streams import StreamClock, forget_devices, stream_start

_CLIP = math.log(3.0)  # a gap counts as at most 3 intervals
_FAST = math.log(0.5)  # gaps under half an interval are bursts, not cadence


class CadenceParams(DetectorParams):
    min_reports: int = Field(default=8, ge=2, le=10_000)
    alpha: float = Field(default=0.05, gt=0, le=1)
    silence_factor: float = Field(default=10.0, ge=2)
    min_silence_s: float = Field(default=600.0, ge=0)
    # A device is "down" for the outage test once it missed this many intervals.
    overdue_factor: float = Field(default=3.0, ge=1.5)
    # Every other kind of the zone must have at least this share of its devices down.
    outage_fraction: float = Field(default=0.6, gt=0, le=1)
    flood_factor: float = Field(default=1.5, gt=1, le=100)
    flood_burst: float = Field(default=12.0, ge=2)
    adopt_after_s: float = Field(default=6 * 3600.0, gt=0)
    # A device first seen `learn_s` after the stream's start is new: its silence raises only
    # once it has reported for `new_device_settle_s` (0: at once). A rogue device that leaves
    # is the inventory detector's finding, not a dead device.
    learn_s: float = Field(default=3600.0, ge=0)
    new_device_settle_s: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> CadenceParams:
        if self.overdue_factor >= self.silence_factor:
            raise ValueError("overdue_factor must be below silence_factor")
        return self


class _Device:
    """One device's cadence; `log_interval` is the learned mean log-gap."""

    __slots__ = (
        "adopt_log",
        "bucket",
        "firing",
        "firing_since",
        "first_seen",
        "gap_from",
        "gap_to",
        "gaps",
        "interval",
        "last_seen",
        "log_interval",
        "queued",
    )

    def __init__(self, ts: float) -> None:
        self.last_seen = ts  # the latest payload time seen
        self.first_seen = ts
        self.log_interval = 0.0
        self.interval = 1.0  # exp(log_interval), kept with it: read on every report
        self.gaps = 0  # gaps learned
        self.bucket = 0.0
        self.firing = ""  # "", "silence" or "flood"
        self.firing_since = 0.0
        self.adopt_log = 0.0  # mean log-gap of every gap while flooding
        self.gap_from = -math.inf  # the last long gap (a silence), for the outage test
        self.gap_to = -math.inf
        self.queued = False  # has an entry in the silence heap


@register("cadence")
class Cadence(Detector):
    params_model = CadenceParams
    params: CadenceParams

    def __init__(self, params: DetectorParams) -> None:
        if not isinstance(params, CadenceParams):
            raise TypeError("Cadence needs CadenceParams")
        super().__init__(params)
        self.devices_: dict[DeviceRef, _Device] = {}
        self.clock_ = StreamClock()
        # (deadline, device): when each warmed-up device is next due for a silence check.
        self.heap_: list[tuple[float, DeviceRef]] = []
        self.started_ = -math.inf  # the first record's time (the learning period's start)
        self._zones: dict[tuple[str, str], list[DeviceRef]] | None = None  # rebuilt on demand

    def update(self, records: Sequence[Record]) -> list[Transition]:
        changes: list[Transition] = []
        heap, devices = self.heap_, self.devices_
        now = self.clock_.now
        self.started_ = stream_start(self.started_, self.clock_, records)
        for record in records:
            ts = record.ts
            if ts > now:  # noqa: PLR1730 - StreamClock.see inlined: max() is a call
                now = ts
            state = devices.get(record.device)
            if state is None:
                devices[record.device] = _Device(ts)
                self._zones = None
            else:
                change = self._report(record.device, state, ts, now)
                if change is not None:
                    changes.append(change)
            if heap and heap[0][0] <= now:
                changes += self._silences(now)
        self.clock_.now = now
        return changes

    def _report(
        self, device: DeviceRef, state: _Device, ts: float, now: float
    ) -> Transition | None:
        # Transitions carry the stream's time `now`: a replayed record's own ts is old.
        p = self.params
        change = None
        gap = ts - state.last_seen
        if state.firing == "silence":
            change = self._clear(device, state, now, f"reporting again after {gap:.0f} s")
        bucket = state.bucket
        if gap > 0 and state.gaps:
            if gap > p.overdue_factor * state.interval:
                state.gap_from, state.gap_to = state.last_seen, ts
            bucket -= gap * p.flood_factor / state.interval
            if bucket < 0.0:  # noqa: PLR1730 - per record: no max() call
                bucket = 0.0
        bucket += 1.0
        if bucket > 2 * p.flood_burst:  # noqa: PLR1730 - per record: no min() call
            bucket = 2 * p.flood_burst
        state.bucket = bucket
        if gap > 0:
            self._learn(state, gap)
            state.last_seen = ts
        if state.gaps >= p.min_reports:
            if state.firing or bucket > p.flood_burst:  # else _flood has nothing to do
                change = self._flood(device, state, now) or change
            if not state.queued and not state.firing:
                self._queue(device, state)
        return change

    def _learn(self, state: _Device, gap: float) -> None:
        p = self.params
        log_gap = math.log(gap)
        if state.firing == "flood":
            state.adopt_log += p.alpha * (log_gap - state.adopt_log)
            return  # a flagged stretch does not move the baseline
        gaps, log_interval = state.gaps, state.log_interval
        if gaps == 0:
            state.log_interval = log_gap
            state.interval = math.exp(log_gap)  # always exp(log_interval), to the last bit
        else:
            if gaps >= p.min_reports:
                if log_gap - log_interval < _FAST:
                    return
                if log_gap > log_interval + _CLIP:  # noqa: PLR1730 - no min() call
                    log_gap = log_interval + _CLIP
            weight = 1.0 / (gaps + 1)
            if weight < p.alpha:  # noqa: PLR1730 - per record: no max() call
                weight = p.alpha
            log_interval += weight * (log_gap - log_interval)
            state.log_interval = log_interval
            state.interval = math.exp(log_interval)
        state.gaps = gaps + 1

    def _flood(self, device: DeviceRef, state: _Device, ts: float) -> Transition | None:
        p = self.params
        if state.firing == "flood":
            if state.bucket < p.flood_burst / 2:
                return self._clear(device, state, ts, "message rate back to its interval")
            if ts - state.firing_since >= p.adopt_after_s:
                state.log_interval = state.adopt_log
                state.interval = math.exp(state.adopt_log)
                state.bucket = 0.0
                reason = f"new reporting interval of {state.interval:.3g} s adopted"
                return self._clear(device, state, ts, reason)
            return None
        if state.firing or state.bucket <= p.flood_burst:
            return None
        state.firing, state.firing_since = "flood", ts
        state.adopt_log = state.log_interval
        expected = p.flood_factor
        return Transition(
            device,
            True,
            ts,
            f"{device.device_id} sends far more messages than its interval of"
            f" {state.interval:.3g} s allows",
            {
                "condition": "flood",
                "interval_s": round(state.interval, 3),
                "excess_messages": round(state.bucket, 1),
                "allowed_per_interval": expected,
                "burst": p.flood_burst,
                "baseline": f"mean log-gap of {state.gaps} reports",
            },
        )

    def _queue(self, device: DeviceRef, state: _Device) -> None:
        heapq.heappush(self.heap_, (state.last_seen + self._silence_after(state), device))
        state.queued = True

    def _silence_after(self, state: _Device) -> float:
        p = self.params
        return max(p.silence_factor * state.interval, p.min_silence_s)

    def _silences(self, now: float) -> list[Transition]:
        changes: list[Transition] = []
        heap = self.heap_
        while heap and heap[0][0] <= now:
            _, device = heapq.heappop(heap)
            state = self.devices_.get(device)
            if state is None or state.firing == "silence":
                continue  # forgotten, or already raised
            state.queued = False
            due = state.last_seen + self._silence_after(state)
            if due > now:
                self._queue(device, state)  # it reported since
                continue
            if self._unsettled(state):
                continue  # a new device that left before it settled: not queued again
            if self._zone_outage(device, state, now):
                # Part of a zone outage: look again later, in case the zone comes back first.
                heapq.heappush(heap, (now + self._silence_after(state), device))
                state.queued = True
                continue
            state.firing, state.firing_since = "silence", now
            changes.append(self._silence(device, state, now))
        return changes

    def _unsettled(self, state: _Device) -> bool:
        p = self.params
        new = state.first_seen - self.started_ > p.learn_s
        return new and state.last_seen - state.first_seen < p.new_device_settle_s

    def _silence(self, device: DeviceRef, state: _Device, now: float) -> Transition:
        quiet = now - state.last_seen
        evidence: dict[str, EvidenceValue] = {
            "condition": "silence",
            "silent_s": round(quiet, 1),
            "last_seen": state.last_seen,
            "interval_s": round(state.interval, 3),
            "silent_after_s": round(self._silence_after(state), 1),
            "baseline": f"mean log-gap of {state.gaps} reports",
            "other_kinds_down": False,
        }
        summary = (
            f"{device.device_id} silent for {quiet:.0f} s (reports every {state.interval:.3g} s;"
            " the zone's other kinds keep reporting)"
        )
        return Transition(device, True, now, summary, evidence)

    def _clear(self, device: DeviceRef, state: _Device, ts: float, reason: str) -> Transition:
        condition = state.firing
        state.firing = ""
        summary = f"{device.device_id} {reason}"
        return Transition(device, False, ts, summary, {"condition": condition, "reason": reason})

    def _zone_outage(self, device: DeviceRef, state: _Device, now: float) -> bool:
        """Whether every other kind of the device's zone went down with it.

        "Down with it": a share of at least `outage_fraction` of the kind's devices was in a
        long gap (over `overdue_factor` intervals) at the moment this device was surely quiet.
        """
        p = self.params
        probe = state.last_seen + p.overdue_factor * state.interval
        total: dict[str, int] = {}
        down: dict[str, int] = {}
        for other in self._zone(device):
            if other.kind == device.kind:
                continue
            o = self.devices_.get(other)
            if o is None or o.gaps < p.min_reports:
                continue
            total[other.kind] = total.get(other.kind, 0) + 1
            ongoing = now - o.last_seen > p.overdue_factor * o.interval and o.last_seen <= probe
            if ongoing or o.gap_from <= probe <= o.gap_to:
                down[other.kind] = down.get(other.kind, 0) + 1
        # With no other kind to compare with there is no evidence of a power cut.
        return bool(total) and all(
            down.get(k, 0) >= p.outage_fraction * n for k, n in total.items()
        )

    def _zone(self, device: DeviceRef) -> list[DeviceRef]:
        if self._zones is None:
            zones: dict[tuple[str, str], list[DeviceRef]] = {}
            for ref in self.devices_:
                zones.setdefault((ref.tenant, ref.zone), []).append(ref)
            self._zones = zones
        return self._zones.get((device.tenant, device.zone), [])

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)
        self._zones = None

    def tracked_devices(self) -> int:
        return len(self.devices_)

    def forget(self, device_ids: set[str]) -> None:
        forget_devices(self.devices_, device_ids)
        self.heap_ = [e for e in self.heap_ if e[1].device_id not in device_ids]
        heapq.heapify(self.heap_)
        self._zones = None
