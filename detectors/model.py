"""The data detectors see and the verdicts they return.

These types are the contract between the agent (which decodes MQTT payloads into records)
and pure detector code. They carry no behaviour beyond what the contract needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

KINDS: tuple[str, ...] = ("lighting", "mobility", "video")


class DeviceRef(NamedTuple):
    """Who a record is about: every record and alert carries these four."""

    tenant: str
    zone: str
    kind: str
    device_id: str


@dataclass(slots=True, frozen=True)
class Record:
    """One decoded, validated telemetry message."""

    device: DeviceRef
    ts: float  # Unix seconds, from the device, never from the wall clock
    metrics: dict[str, float]
    seq: int | None = None


@dataclass(slots=True, frozen=True)
class StatusRecord:
    """A device's online/offline report (retained status or MQTT last will)."""

    device: DeviceRef
    ts: float
    online: bool


EvidenceValue = float | int | str | bool | None


@dataclass(slots=True, frozen=True)
class Transition:
    """A detector's verdict changed for one device: it started or stopped firing.

    `evidence` holds what crossed the line: the observed values, the threshold or expected
    range, and the number of points that decided it.
    """

    device: DeviceRef
    firing: bool
    ts: float
    summary: str
    evidence: dict[str, EvidenceValue] = field(default_factory=dict)
