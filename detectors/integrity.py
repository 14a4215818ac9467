"""Integrity: messages that cannot be genuine, whatever their values' usual level.

Per device, on every record:
- **replayed**: the sequence number goes back (and the time with it) - a captured message
  played again. A sequence that falls to `reset_max_seq` or below while time moves forward is
  the device restarting its counter, not a replay;
- **duplicate sequence number**: the same `seq` again with another timestamp (a second
  publisher on the topic). An exact copy (same `seq`, same `ts`) is MQTT's at-least-once
  redelivery and is ignored;
- **time going backwards**: `ts` earlier than the device's latest by more than
  `backwards_tolerance_s`;
- **clock skew**: the device's clock, averaged over its reports (`skew_alpha`), is more than
  `max_skew_s` away from the stream's time (detectors.streams.StreamClock);
- **impossible value**: a metric outside its physical bounds (`bounds`, over a built-in table
  of the fleet's metrics unless `default_bounds = false`);
- **stuck value**: one of `stuck_metrics` has repeated the same value for `stuck_after`
  reports although it changed at least `stuck_min_changes` times before (it normally moves).

The first finding raises (with its evidence); `clear_after` clean records in a row clear.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence

from pydantic import Field, field_validator

from detectors.base import Detector, DetectorParams
from detectors.model import DeviceRef, EvidenceValue, Record, Transition
from detectors.registry import register
from detectors.streams import StreamClock, forget_devices

_HUGE = 1e18
# What no healthy device of the simulated fleet's kinds can report (docs/wire-format.md).
DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {
    "on": (0.0, 1.0),
    "occupied": (0.0, 1.0),
    "dim_pct": (0.0, 100.0),
    "occupancy_pct": (0.0, 100.0),
    "storage_pct": (0.0, 100.0),
    "power_w": (0.0, 2_000.0),
    "lux": (0.0, 200_000.0),
    "driver_temp_c": (-50.0, 150.0),
    "burning_hours": (0.0, 200_000.0),
    "speed_kmh": (0.0, 250.0),
    "vehicles": (0.0, _HUGE),
    "bikes_available": (0.0, _HUGE),
    "docks_free": (0.0, _HUGE),
    "fps": (0.0, 240.0),
    "bitrate_kbps": (0.0, _HUGE),
    "upload_kbps": (0.0, _HUGE),
    "uptime_s": (0.0, _HUGE),
    **{
        f"net_{m}": (0.0, _HUGE)
        for m in (
            "bytes_out",
            "bytes_in",
            "pkts_out",
            "conns",
            "dst_ips",
            "dst_ports",
            "new_dsts",
            "telnet_attempts",
            "dns_queries",
        )
    },
}


class IntegrityParams(DetectorParams):
    backwards_tolerance_s: float = Field(default=1.0, ge=0)
    reset_max_seq: int = Field(default=16, ge=0)
    max_skew_s: float = Field(default=600.0, gt=0)
    skew_alpha: float = Field(default=0.1, gt=0, le=1)
    skew_min_reports: int = Field(default=10, ge=1)
    default_bounds: bool = True
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict, max_length=256)
    stuck_metrics: tuple[str, ...] = Field(default=(), max_length=64)
    stuck_after: int = Field(default=30, ge=2, le=100_000)
    stuck_min_changes: int = Field(default=10, ge=1)
    clear_after: int = Field(default=10, ge=1, le=100_000)

    @field_validator("bounds")
    @classmethod
    def _ordered(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (low, high) in v.items():
            if not low <= high:
                raise ValueError(f"bounds of {name}: low must not exceed high")
        return v


class _Device:
    __slots__ = ("clean", "firing", "last_ts", "max_seq", "reports", "runs", "skew")

    def __init__(self, ts: float, seq: int | None) -> None:
        self.last_ts = ts
        self.max_seq = seq
        self.skew = 0.0
        self.reports = 0  # reports in the skew average
        self.firing = False
        self.clean = 0
        # Per stuck-watched metric, in `stuck_metrics` order: its last value (NaN: not seen
        # yet), run length and changes, flat in one float array: a dict of small objects
        # cost ~400 bytes per camera.
        self.runs: array[float] | None = None


Finding = dict[str, EvidenceValue]


@register("integrity")
class Integrity(Detector):
    params_model = IntegrityParams
    params: IntegrityParams

    def __init__(self, params: DetectorParams) -> None:
        if not isinstance(params, IntegrityParams):
            raise TypeError("Integrity needs IntegrityParams")
        super().__init__(params)
        self._bounds = {**(DEFAULT_BOUNDS if params.default_bounds else {}), **params.bounds}
        self.devices_: dict[DeviceRef, _Device] = {}
        self.clock_ = StreamClock()

    def update(self, records: Sequence[Record]) -> list[Transition]:
        changes: list[Transition] = []
        clock = self.clock_
        for record in records:
            change = self._check(record, clock.see(record.ts))
            if change is not None:
                changes.append(change)
        return changes

    def _check(self, record: Record, now: float) -> Transition | None:
        state = self.devices_.get(record.device)
        order: Finding = {}
        if state is None:
            state = self.devices_[record.device] = _Device(record.ts, record.seq)
        else:
            order = self._sequence(record, state)
        # Every check runs (each keeps its own running state); the first finding is reported.
        values = self._values(record, state)
        skew = self._skew(record, state, now)
        return self._decide(record, state, order or values or skew, now)

    def _sequence(self, record: Record, state: _Device) -> Finding:
        """Sequence and time order; updates the device's latest seq and ts."""
        p = self.params
        ts, seq, last_ts, max_seq = record.ts, record.seq, state.last_ts, state.max_seq
        back = ts < last_ts - p.backwards_tolerance_s
        state.last_ts = max(ts, last_ts)
        finding: Finding = {}
        if seq is not None and max_seq is not None:
            if seq == max_seq and ts != last_ts:
                finding = {"check": "duplicate seq", "seq": seq, "ts": ts, "previous_ts": last_ts}
            elif seq < max_seq:
                if ts > last_ts and seq <= p.reset_max_seq:
                    state.max_seq = seq  # the device restarted its counter
                    return {}
                finding = {"check": "replayed", "seq": seq, "max_seq": max_seq}
                finding.update(ts=ts, latest_ts=last_ts, age_s=round(last_ts - ts, 3))
        if seq is not None and (max_seq is None or seq > max_seq):
            state.max_seq = seq
        if back and not finding:
            finding = {"check": "time backwards", "ts": ts, "latest_ts": last_ts}
            finding["age_s"] = round(last_ts - ts, 3)
        return finding

    def _values(self, record: Record, state: _Device) -> Finding:
        bounds = self._bounds
        for name, value in record.metrics.items():
            limits = bounds.get(name)
            if limits is not None and (value < limits[0] or value > limits[1]):
                finding: Finding = {"check": "impossible value", "metric": name, "value": value}
                finding.update(expected_low=limits[0], expected_high=limits[1])
                finding["baseline"] = "physical bounds"
                return finding
        if self.params.stuck_metrics:
            return self._stuck_values(record, state)
        return {}

    def _stuck_values(self, record: Record, state: _Device) -> Finding:
        p = self.params
        finding: Finding = {}
        runs = state.runs
        for i, name in enumerate(p.stuck_metrics):
            value = record.metrics.get(name)
            if value is None or math.isnan(value):
                continue
            if runs is None or len(runs) != 3 * len(p.stuck_metrics):  # new, or reconfigured
                runs = state.runs = array("d", [math.nan, 0.0, 0.0] * len(p.stuck_metrics))
            at = 3 * i
            if value == runs[at]:
                runs[at + 1] += 1
            else:
                if not math.isnan(runs[at]):
                    runs[at + 2] += 1
                runs[at], runs[at + 1] = value, 1
            reports, changes = int(runs[at + 1]), int(runs[at + 2])
            if not finding and reports >= p.stuck_after and changes >= p.stuck_min_changes:
                finding = {"check": "stuck value", "metric": name, "value": value}
                finding.update(reports=reports, changes_before=changes)
        return finding

    def _skew(self, record: Record, state: _Device, now: float) -> Finding:
        p = self.params
        if record.ts < state.last_ts:
            return {}  # late or replayed: not a clock reading
        state.skew += max(p.skew_alpha, 1.0 / (state.reports + 1)) * (record.ts - now - state.skew)
        state.reports += 1
        limit = p.max_skew_s / 2 if state.firing else p.max_skew_s
        if state.reports >= p.skew_min_reports and abs(state.skew) > limit:
            return {"check": "clock skew", "skew_s": round(state.skew, 3), "max_skew_s": limit}
        return {}

    def _decide(
        self, record: Record, state: _Device, finding: Finding, now: float
    ) -> Transition | None:
        # Alerts carry the stream's time: a replayed record's own ts is from the past.
        device = record.device
        if finding:
            state.clean = 0
            if state.firing:
                return None
            state.firing = True
            return Transition(device, True, now, _summary(device, finding), finding)
        if not state.firing:
            return None
        state.clean += 1
        if state.clean < self.params.clear_after:
            return None
        state.firing = False
        summary = f"{device.device_id}: {state.clean} consistent reports in a row"
        return Transition(device, False, now, summary, {"clean_reports": state.clean})

    def tracked_devices(self) -> int:
        return len(self.devices_)

    def forget(self, device_ids: set[str]) -> None:
        forget_devices(self.devices_, device_ids)


_SUMMARIES = {
    "replayed": "replays seq {seq} (latest {max_seq}), {age_s} s old",
    "duplicate seq": "sent seq {seq} twice with different times (a second publisher?)",
    "time backwards": "time went back by {age_s} s",
    "clock skew": "clock is {skew_s} s off the fleet's",
    "impossible value": "reports {metric} = {value}, outside {expected_low}..{expected_high}",
    "stuck value": "{metric} stuck at {value} for {reports} reports",
}


def _summary(device: DeviceRef, finding: Finding) -> str:
    return f"{device.device_id} " + _SUMMARIES[str(finding["check"])].format(**finding)
