"""Which device ids the agent keeps state and series for.

Device ids are attacker-controlled. Up to `max_devices` distinct ids are admitted; past that,
new ids are rejected (counted as `device_cap`), and the flood becomes ONE aggregated alert,
never one alert, one series or one state entry per invented id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from detectors.model import DeviceRef, Transition
from sentinel.alerting.alerts import AlertSource

FLEET = DeviceRef("_all", "_all", "_all", "_unknown_devices")
SOURCE = AlertSource(
    name="device-cap",
    alertname="DeviceCapReached",
    detector_type="admission",
    severity="warning",
    summary="More distinct device ids than the fleet can have: invented ids are being refused",
)
QUIET_S = 300.0  # the alert resolves after this long without a refused id
SAMPLES = 3


@dataclass
class Admission:
    max_devices: int
    known: set[str] = field(default_factory=set)
    refused: int = 0  # since the alert fired
    samples: list[str] = field(default_factory=list)
    firing: bool = False
    last_refusal: float = 0.0
    _reported: int = 0  # `refused` at the previous call of `transitions`
    # `knows_all`'s memory: a set found all known (ids are never forgotten, so it stays so),
    # and how many ids were known when another set was found not to be.
    _all_known: frozenset[str] = frozenset()
    _short_at: tuple[frozenset[str], int] | None = None

    def admit(self, device_id: str) -> bool:
        if device_id in self.known:
            return True
        if len(self.known) < self.max_devices:
            self.known.add(device_id)
            return True
        self.refused += 1
        if len(self.samples) < SAMPLES:
            self.samples.append(device_id[:64])
        return False

    def knows_all(self, ids: frozenset[str]) -> bool:
        """Whether every id of `ids` (a producer's whole fleet, handed over with each run of
        its reports) was admitted already. Free once true for that very set; rechecked only
        after new ids came in."""
        if ids is self._all_known:
            return True
        short = self._short_at
        if short is not None and short[0] is ids and short[1] == len(self.known):
            return False
        if self.known.issuperset(ids):
            self._all_known = ids
            return True
        self._short_at = (ids, len(self.known))
        return False

    def transitions(self, now: float) -> list[Transition]:
        """After a batch: raise once when ids are refused, resolve after a quiet spell."""
        new_refusals = self.refused > self._reported
        self._reported = self.refused
        if new_refusals:
            self.last_refusal = now
            if not self.firing:
                self.firing = True
                return [self._transition(now, firing=True)]
        elif self.firing and now - self.last_refusal >= QUIET_S:
            self.firing = False
            out = [self._transition(now, firing=False)]
            self.refused = self._reported = 0
            self.samples = []
            return out
        return []

    def _transition(self, now: float, *, firing: bool) -> Transition:
        return Transition(
            device=FLEET,
            firing=firing,
            ts=now,
            summary=f"{self.refused} messages from device ids beyond the cap of {self.max_devices}",
            evidence={
                "refused_messages": self.refused,
                "max_devices": self.max_devices,
                "sample_ids": ", ".join(self.samples),
            },
        )
