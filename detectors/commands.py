"""Commands: who commands the fleet, when, and how many devices at once.

Reads CommandRecords (the engine routes them to detectors that have `update_commands`);
telemetry records only move its clock (detectors.streams.StreamClock). A command is suspicious
when any of these holds:

- **mass command**: at least `mass_min_devices` distinct devices of one zone commanded within
  `mass_window_s` (a script sweeping a district);
- **unusual sender**: the payload names a sender (`client_id`) that is not in
  `allowed_senders`; without an allow-list, a sender never seen before, once
  `warmup_commands` commands have been seen;
- **unusual hour**: the local hour (`utc_offset_minutes`) is outside `hours = [start, end)`;
  without configured hours, an hour of the day that carried less than `hour_min_share` of
  the commands seen, once `warmup_commands` commands have been seen.

The first suspicious command of a zone raises one alert (on its target device, with the
reasons as evidence); further suspicious commands there extend it; it clears `hold_s` after
the last one. Only unsuspicious commands teach senders and hours (an attack does not become
the baseline).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np
from pydantic import Field, field_validator

from detectors.base import Detector, DetectorParams
from detectors.columns import Columns
from detectors.model import CommandRecord, DeviceRef, EvidenceValue, Record, Transition
from detectors.registry import register
from detectors.streams import StreamClock

_MAX_WINDOW = 10_000  # commands kept per zone window, whatever the rate


class CommandsParams(DetectorParams):
    mass_min_devices: int = Field(default=5, ge=2, le=100_000)
    mass_window_s: float = Field(default=300.0, gt=0, le=86_400)
    allowed_senders: tuple[str, ...] = Field(default=(), max_length=1024)
    hours: tuple[int, int] | None = None
    utc_offset_minutes: int = Field(default=60, ge=-14 * 60, le=14 * 60)
    hour_min_share: float = Field(default=0.01, ge=0, lt=1)
    warmup_commands: int = Field(default=50, ge=1)
    max_senders: int = Field(default=1024, ge=1, le=100_000)
    hold_s: float = Field(default=900.0, gt=0)

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not (0 <= v[0] <= 23 and 0 <= v[1] <= 24 and v[0] != v[1]):
            raise ValueError("hours must be [start, end) with 0 <= start <= 23, end <= 24")
        return v


class _Zone:
    """Recent commands of one zone, and its alert."""

    __slots__ = ("device", "firing", "last_suspicious", "recent")

    def __init__(self) -> None:
        self.recent: deque[tuple[float, str]] = deque(maxlen=_MAX_WINDOW)
        self.firing = False
        self.device: DeviceRef | None = None  # the device the zone's alert was raised on
        self.last_suspicious = 0.0


@register("commands")
class Commands(Detector):
    params_model = CommandsParams
    params: CommandsParams

    def __init__(self, params: DetectorParams) -> None:
        if not isinstance(params, CommandsParams):
            raise TypeError("Commands needs CommandsParams")
        super().__init__(params)
        self.clock_ = StreamClock()
        self.zones_: dict[tuple[str, str], _Zone] = {}
        self.senders_: dict[str, int] = {}  # insertion order = age: the oldest is dropped
        self.hours_: list[int] = [0] * 24
        self.seen_ = 0
        self.due_ = math.inf  # the earliest time a zone may clear or be dropped

    def update(self, records: Sequence[Record]) -> list[Transition]:
        # Telemetry only moves the clock; a zone is looked at once its due time has come.
        changes: list[Transition] = []
        now, due = self.clock_.now, self.due_
        for record in records:
            if record.ts > now:  # noqa: PLR1730 - StreamClock.see inlined: max() is a call
                now = record.ts
            if now >= due:
                changes += self._clears(now)
                due = self.due_
        self.clock_.now = now
        return changes

    def update_columns(self, columns: Columns) -> list[Transition]:
        """`update` on the time column: the rows where the stream time reaches the due time
        are found by bisection (the stream time never goes back)."""
        changes: list[Transition] = []
        if not len(columns):
            return changes
        now = np.maximum.accumulate(np.concatenate(([self.clock_.now], columns.ts)))[1:]
        row = 0
        while (row := row + int(np.searchsorted(now[row:], self.due_))) < len(now):
            changes += self._clears(float(now[row]))
            row += 1
        self.clock_.now = float(now[-1])
        return changes

    def update_commands(self, commands: Sequence[CommandRecord]) -> list[Transition]:
        changes: list[Transition] = []
        for command in commands:
            now = self.clock_.see(command.ts)
            if now >= self.due_:
                changes += self._clears(now)
            change = self._command(command)
            if change is not None:
                changes.append(change)
            self.due_ = min(self.due_, self._due(self.zones_[_zone_key(command.device)]))
        return changes

    def _command(self, command: CommandRecord) -> Transition | None:
        p = self.params
        device = command.device
        zone = self.zones_.setdefault(_zone_key(device), _Zone())
        zone.recent.append((command.ts, device.device_id))
        while zone.recent and zone.recent[0][0] < command.ts - p.mass_window_s:
            zone.recent.popleft()
        targets = len({d for _, d in zone.recent})
        hour = int((command.ts + p.utc_offset_minutes * 60) // 3600 % 24)
        reasons: list[str] = []
        if targets >= p.mass_min_devices:
            reasons.append(f"mass: {targets} devices of the zone in {p.mass_window_s:g} s")
        sender = command.sender
        if sender is not None and self._unusual_sender(sender):
            reasons.append(f"unusual sender {sender}")
        if self._unusual_hour(hour):
            reasons.append(f"unusual hour {hour:02d}h")
        if not reasons:
            self._learn(sender, hour)
            return None
        zone.last_suspicious = command.ts
        if zone.firing:
            return None
        zone.firing, zone.device = True, device
        evidence: dict[str, EvidenceValue] = {
            "reasons": "; ".join(reasons),
            "command": command.command,
            "args": ", ".join(f"{k}={v:g}" for k, v in command.args.items()),
            "sender": sender,
            "local_hour": hour,
            "allowed_hours": "learned" if p.hours is None else f"{p.hours[0]}-{p.hours[1]}",
            "devices_in_window": targets,
            "window_s": p.mass_window_s,
        }
        summary = f"{command.command} to {device.device_id} ({device.zone}): " + "; ".join(reasons)
        return Transition(device, True, command.ts, summary, evidence)

    def _unusual_sender(self, sender: str) -> bool:
        p = self.params
        if p.allowed_senders:
            return sender not in p.allowed_senders
        return self.seen_ >= p.warmup_commands and sender not in self.senders_

    def _unusual_hour(self, hour: int) -> bool:
        p = self.params
        if p.hours is not None:
            start, end = p.hours
            inside = start <= hour < end if start < end else hour >= start or hour < end
            return not inside
        if self.seen_ < p.warmup_commands:
            return False
        return self.hours_[hour] < p.hour_min_share * self.seen_

    def _learn(self, sender: str | None, hour: int) -> None:
        self.seen_ += 1
        self.hours_[hour] += 1
        if sender is not None:
            self.senders_[sender] = self.senders_.pop(sender, 0) + 1
            while len(self.senders_) > self.params.max_senders:
                del self.senders_[next(iter(self.senders_))]

    def _due(self, zone: _Zone) -> float:
        if zone.firing:
            return zone.last_suspicious + self.params.hold_s
        return (zone.recent[-1][0] if zone.recent else -math.inf) + self.params.mass_window_s

    def _clears(self, now: float) -> list[Transition]:
        """Clear the zones quiet for `hold_s`; drop the ones with nothing left to remember."""
        changes: list[Transition] = []
        due = math.inf
        for key in list(self.zones_):
            zone = self.zones_[key]
            if self._due(zone) > now:
                due = min(due, self._due(zone))
            elif not zone.firing or zone.device is None:
                del self.zones_[key]
            else:
                zone.firing = False
                quiet = now - zone.last_suspicious
                reason = f"no suspicious command in the zone for {quiet:.0f} s"
                summary = f"{key[1]}: {reason}"
                changes.append(Transition(zone.device, False, now, summary, {"reason": reason}))
                due = min(due, self._due(zone))
        self.due_ = due
        return changes

    def tracked_devices(self) -> int:
        return len({d for zone in self.zones_.values() for _, d in zone.recent})

    def forget(self, device_ids: set[str]) -> None:
        # A firing zone keeps its alert's device: the alert must still clear.
        for zone in self.zones_.values():
            zone.recent = deque(
                (e for e in zone.recent if e[1] not in device_ids), maxlen=_MAX_WINDOW
            )


def _zone_key(device: DeviceRef) -> tuple[str, str]:
    return (device.tenant, device.zone)
