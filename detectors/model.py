"""The data detectors see and the verdicts they return.

These types are the contract between the agent (which decodes MQTT payloads into records)
and pure detector code. They carry no behaviour beyond what the contract needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

KINDS: tuple[str, ...] = ("lighting", "mobility", "video")


class DeviceRef(NamedTuple):
    """Who a record is about: every record and alert carries these four."""

    tenant: str
    zone: str
    kind: str
    device_id: str


@dataclass(slots=True, frozen=True)
class Record:
    """One decoded, validated telemetry message.

    `info` is the payload's identity object (client_id, src_ip, firmware, config_hash; see
    docs/wire-format.md), already bounded by the decoder. It is attacker-controlled text.
    """

    device: DeviceRef
    ts: float  # Unix seconds, from the device, never from the wall clock
    metrics: dict[str, float]
    seq: int | None = None
    info: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class StatusRecord:
    """A device's online/offline report (retained status or MQTT last will)."""

    device: DeviceRef
    ts: float
    online: bool


@dataclass(slots=True, frozen=True)
class CommandRecord:
    """A command sent to a device on its command topic (by an operator, or by an attacker).

    `args` are the payload's numeric arguments (bounded by the decoder); `sender` is the
    client id the payload names, when it names one (MQTT itself does not tell a subscriber
    who published).
    """

    device: DeviceRef  # the target, from the topic
    ts: float
    command: str
    args: Mapping[str, float] = field(default_factory=dict)
    sender: str | None = None


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


@runtime_checkable
class CommandConsumer(Protocol):
    """A detector that also reads commands (the engine routes CommandRecords to it)."""

    def update_commands(self, commands: Sequence[CommandRecord]) -> list[Transition]: ...
