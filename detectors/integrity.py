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
from collections.abc import Callable, Sequence

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
Bounds = tuple[float, float]


@register("integrity")
class Integrity(Detector):
    params_model = IntegrityParams
    params: IntegrityParams

    def __init__(self, params: DetectorParams) -> None:
        if not isinstance(params, IntegrityParams):
            raise TypeError("Integrity needs IntegrityParams")
        super().__init__(params)
        self._bounds = {**(DEFAULT_BOUNDS if params.default_bounds else {}), **params.bounds}
        # Each stuck-watched metric and its offset in a device's `runs` array.
        self._stuck_at = tuple((name, 3 * i) for i, name in enumerate(params.stuck_metrics))
        self.devices_: dict[DeviceRef, _Device] = {}
        self.clock_ = StreamClock()

    def update(self, records: Sequence[Record]) -> list[Transition]:
        # The hot loop: one pass per record with the parameters in locals; the helpers run
        # only for what is rare (a sequence out of order, a finding, a firing device).
        changes: list[Transition] = []
        p = self.params
        devices, bounds_of = self.devices_, self._bounds.get
        tolerance, alpha, min_reports = p.backwards_tolerance_s, p.skew_alpha, p.skew_min_reports
        max_skew, firing_max_skew = p.max_skew_s, p.max_skew_s / 2
        stuck = bool(p.stuck_metrics)
        now = self.clock_.now
        for record in records:
            ts = record.ts
            if ts > now:  # noqa: PLR1730 - StreamClock.see inlined: max() is a call
                now = ts
            state = devices.get(record.device)
            order: Finding | None = None
            if state is None:
                state = devices[record.device] = _Device(ts, record.seq)
            else:
                seq, max_seq, last_ts = record.seq, state.max_seq, state.last_ts
                if seq is not None and max_seq is not None and seq > max_seq:
                    if ts < last_ts - tolerance:
                        order = self._sequence(record, state)
                    else:  # the usual report: the next seq, time going forward
                        state.max_seq = seq
                        if ts > last_ts:
                            state.last_ts = ts
                else:
                    order = self._sequence(record, state)
            # Every check runs (each keeps its own running state); the first finding is reported.
            values = _out_of_bounds(record.metrics, bounds_of)
            if values is None and stuck:
                values = self._stuck_values(record, state)
            skew: Finding | None = None
            if ts >= state.last_ts:  # a late or replayed record is not a clock reading
                reports = state.reports + 1
                weight = 1.0 / reports
                if weight < alpha:  # noqa: PLR1730 - per record: no max() call
                    weight = alpha
                state.skew += weight * (ts - now - state.skew)
                state.reports = reports
                limit = firing_max_skew if state.firing else max_skew
                if reports >= min_reports and abs(state.skew) > limit:
                    skew = {"check": "clock skew", "skew_s": round(state.skew, 3)}
                    skew["max_skew_s"] = limit
            finding = order or values or skew
            if finding is not None or state.firing:
                change = self._decide(record.device, state, finding, now)
                if change is not None:
                    changes.append(change)
        self.clock_.now = now
        return changes

    def _sequence(self, record: Record, state: _Device) -> Finding | None:
        """Sequence and time order; updates the device's latest seq and ts."""
        p = self.params
        ts, seq, last_ts, max_seq = record.ts, record.seq, state.last_ts, state.max_seq
        back = ts < last_ts - p.backwards_tolerance_s
        state.last_ts = max(ts, last_ts)
        finding: Finding | None = None
        if seq is not None and max_seq is not None:
            if seq == max_seq and ts != last_ts:
                finding = {"check": "duplicate seq", "seq": seq, "ts": ts, "previous_ts": last_ts}
            elif seq < max_seq:
                if ts > last_ts and seq <= p.reset_max_seq:
                    state.max_seq = seq  # the device restarted its counter
                    return None
                finding = {"check": "replayed", "seq": seq, "max_seq": max_seq}
                finding.update(ts=ts, latest_ts=last_ts, age_s=round(last_ts - ts, 3))
        if seq is not None and (max_seq is None or seq > max_seq):
            state.max_seq = seq
        if back and not finding:
            finding = {"check": "time backwards", "ts": ts, "latest_ts": last_ts}
            finding["age_s"] = round(last_ts - ts, 3)
        return finding

    def _stuck_values(self, record: Record, state: _Device) -> Finding | None:
        p = self.params
        after, min_changes = p.stuck_after, p.stuck_min_changes
        metrics, runs, width = record.metrics, state.runs, 3 * len(p.stuck_metrics)
        finding: Finding | None = None
        for name, at in self._stuck_at:
            value = metrics.get(name)
            if value is None or value != value:  # noqa: PLR0124 - absent, or NaN
                continue
            if runs is None or len(runs) != width:  # new, or reconfigured
                runs = state.runs = array("d", [math.nan, 0.0, 0.0] * len(p.stuck_metrics))
            last = runs[at]
            if value == last:
                run = runs[at + 1] = runs[at + 1] + 1
            else:
                # Not NaN (no value seen yet): it changed from a value seen before.
                if last == last:  # noqa: PLR0124
                    runs[at + 2] += 1
                runs[at] = value
                run = runs[at + 1] = 1
            if run >= after and finding is None and runs[at + 2] >= min_changes:
                reports, changes = int(run), int(runs[at + 2])
                finding = {"check": "stuck value", "metric": name, "value": value}
                finding.update(reports=reports, changes_before=changes)
        return finding

    def _decide(
        self, device: DeviceRef, state: _Device, finding: Finding | None, now: float
    ) -> Transition | None:
        # Alerts carry the stream's time: a replayed record's own ts is from the past.
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


_UNBOUNDED = (-math.inf, math.inf)  # what a metric without bounds is checked against


def _out_of_bounds(
    metrics: dict[str, float], bounds_of: Callable[[str, Bounds], Bounds]
) -> Finding | None:
    """The first metric outside its physical bounds (NaN is not: it compares with nothing)."""
    for name, value in metrics.items():
        low, high = bounds_of(name, _UNBOUNDED)
        if value < low or value > high:
            finding: Finding = {"check": "impossible value", "metric": name, "value": value}
            finding.update(expected_low=low, expected_high=high)
            finding["baseline"] = "physical bounds"
            return finding
    return None


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
