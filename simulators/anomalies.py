"""Injected anomalies with their ground truth.

An anomaly rewrites the metrics of the devices it targets while it is active. Each scenario is one
class implementing `Anomaly`; `CameraUploadSurge` is the first.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar, Protocol

import orjson

from simulators import catalog
from simulators.fleet import Device, Fleet

Metrics = dict[str, float]


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """What happened where and when: the label a detector is scored against.

    The window is [start_ts, end_ts) in the devices' own clock (the payload `ts`).
    """

    kind: str
    device_id: str
    tenant: str
    zone: str
    start_ts: float
    end_ts: float

    def to_json(self) -> str:
        """One JSON line, for a JSONL file of labels."""
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, line: str) -> GroundTruth:
        return cls(**orjson.loads(line))


class Anomaly(Protocol):
    @property
    def truth(self) -> GroundTruth:
        """The target device and the active window; the generator applies `apply` inside it."""
        ...

    def apply(self, device: Device, ts: float, metrics: Metrics) -> Metrics:
        """The metrics the device reports at `ts` instead of its normal ones."""
        ...


@dataclass(frozen=True, slots=True)
class CameraUploadSurge:
    """A camera uploading `factor` times its stream: footage or data leaving, not more video."""

    truth: GroundTruth
    factor: float

    KIND: ClassVar[str] = "camera_upload_surge"

    def apply(self, device: Device, ts: float, metrics: Metrics) -> Metrics:
        return {**metrics, "upload_kbps": round(metrics["upload_kbps"] * self.factor, 1)}


@dataclass(frozen=True, slots=True)
class AnomalySpec:
    """A camera upload surge, as asked on the command line.

    `device_id` None picks the fleet's first camera; the window starts `start_offset_s` simulated
    seconds after the simulation's start and lasts `duration_s`.
    """

    device_id: str | None
    start_offset_s: float
    duration_s: float
    factor: float = 10.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_offset_s) and self.start_offset_s >= 0):
            raise ValueError(f"start_offset_s must be >= 0, got {self.start_offset_s}")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(f"duration_s must be > 0, got {self.duration_s}")
        if not (math.isfinite(self.factor) and self.factor > 0):
            raise ValueError(f"factor must be > 0, got {self.factor}")

    def resolve(self, fleet: Fleet, start_ts: float) -> CameraUploadSurge:
        device = self._camera(fleet)
        start = start_ts + self.start_offset_s
        truth = GroundTruth(
            kind=CameraUploadSurge.KIND,
            device_id=device.device_id,
            tenant=device.tenant,
            zone=device.zone,
            start_ts=round(start, 3),
            end_ts=round(start + self.duration_s, 3),
        )
        return CameraUploadSurge(truth, self.factor)

    def _camera(self, fleet: Fleet) -> Device:
        if self.device_id is None:
            cameras = fleet.of_kind(catalog.VIDEO)
            if not cameras:
                raise ValueError("the fleet has no camera to inject a camera upload surge into")
            return cameras[0]
        device = fleet.get(self.device_id)
        if device.kind != catalog.VIDEO:
            raise ValueError(f"{self.device_id} is a {device.kind} device, not a camera")
        return device
