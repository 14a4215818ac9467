"""Alerts as the SOC sees them, and the book that keeps the active ones.

A detector says "device X started / stopped firing"; the book turns that into an alert with
a stable fingerprint, keeps it while active, and counts it in the metrics.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field

import orjson

from detectors.model import DeviceRef, EvidenceValue, Transition
from sentinel.metrics import Metrics


@dataclass(frozen=True, slots=True)
class AlertSource:
    """What the book needs to know about the detector instance that raised a transition."""

    name: str  # the configured detector name, e.g. "camera-upload-surge"
    alertname: str  # e.g. "CameraUploadSurge"
    detector_type: str
    severity: str
    summary: str = ""


@dataclass(slots=True)
class Alert:
    source: AlertSource
    device: DeviceRef
    starts_at: float  # device time of the transition that raised it
    summary: str
    evidence: dict[str, EvidenceValue]
    ends_at: float | None = None  # device time of the transition that cleared it
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        key = "\x1f".join((self.source.name, *self.device))
        self.fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]

    @property
    def firing(self) -> bool:
        return self.ends_at is None

    def labels(self) -> dict[str, str]:
        d = self.device
        return {
            "alertname": self.source.alertname,
            "severity": self.source.severity,
            "tenant": d.tenant,
            "zone": d.zone,
            "kind": d.kind,
            "device_id": d.device_id,
            "detector": self.source.name,
        }

    def evidence_json(self) -> str:
        return orjson.dumps(self.evidence, option=orjson.OPT_SORT_KEYS).decode()


def alertname_for(name: str) -> str:
    """`camera-upload-surge` → `CameraUploadSurge`."""
    return "".join(part[:1].upper() + part[1:] for part in name.replace("_", "-").split("-"))


class AlertBook:
    """Active alerts by fingerprint, plus a short history for consoles."""

    def __init__(self, metrics: Metrics, history: int = 200) -> None:
        self._metrics = metrics
        self.active: dict[str, Alert] = {}
        self.history: deque[Alert] = deque(maxlen=history)

    def apply(self, source: AlertSource, transitions: list[Transition]) -> list[Alert]:
        """Record transitions; return the alerts that changed (raised or resolved)."""
        changed: list[Alert] = []
        for t in transitions:
            probe = Alert(source, t.device, t.ts, t.summary, t.evidence)
            current = self.active.get(probe.fingerprint)
            if t.firing and current is None:
                if source.summary:
                    probe.summary = f"{source.summary}: {t.summary}"
                self.active[probe.fingerprint] = probe
                self._metrics.alerts.labels(source.name, source.severity).inc()
                self._metrics.alerts_active.labels(source.name, source.severity).inc()
                self.history.append(probe)
                changed.append(probe)
            elif not t.firing and current is not None:
                current.ends_at = max(t.ts, current.starts_at)
                current.evidence = {**current.evidence, "cleared_by": t.evidence.get("value")}
                del self.active[current.fingerprint]
                self._metrics.alerts_active.labels(source.name, source.severity).dec()
                changed.append(current)
        return changed
