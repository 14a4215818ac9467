"""Injected anomalies with their ground truth.

An anomaly rewrites the metrics of the devices it targets while it is active. Each scenario is one
class implementing `Anomaly`; `CameraUploadSurge` is the first.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Final, Protocol

import orjson

from simulators import catalog
from simulators.fleet import Device, Fleet

Metrics = dict[str, float]


ATTACK: Final = "attack"
BENIGN: Final = "benign"
LABELS = (ATTACK, BENIGN)


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """What happened where and when: the label a detector is scored against.

    `devices` are the device ids involved; the window is [start, end) in the devices' own clock
    (the payload `ts`). `label` is `attack` or `benign` (an event a good detector must not alert
    on). `zones` lists the `tenant/zone` pairs involved; `scenario` names the scenario file and
    `detail` says how the event was performed (e.g. which MQTT credentials a real client used).
    """

    kind: str
    devices: tuple[str, ...]
    start: float
    end: float
    label: str = ATTACK
    zones: tuple[str, ...] = ()
    scenario: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {self.label!r}")
        if not self.start <= self.end:
            raise ValueError(f"need start <= end, got {self.start}, {self.end}")

    @classmethod
    def one(cls, kind: str, device: Device, start: float, end: float) -> GroundTruth:
        return cls(kind, (device.device_id,), start, end, zones=(f"{device.tenant}/{device.zone}",))

    # The first device and zone, for callers that handle one device per label.
    @property
    def device_id(self) -> str:
        return self.devices[0] if self.devices else ""

    @property
    def tenant(self) -> str:
        return self.zones[0].split("/", 1)[0] if self.zones else ""

    @property
    def zone(self) -> str:
        return self.zones[0].split("/", 1)[-1] if self.zones else ""

    @property
    def start_ts(self) -> float:
        return self.start

    @property
    def end_ts(self) -> float:
        return self.end

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["devices"] = list(self.devices)
        out["zones"] = list(self.zones)
        return out

    def to_json(self) -> str:
        """One JSON line, for a JSONL file of labels."""
        return orjson.dumps(self.to_dict()).decode()

    @classmethod
    def from_json(cls, line: str | bytes) -> GroundTruth:
        raw = orjson.loads(line)
        if not isinstance(raw, dict):
            raise ValueError("a ground-truth line is a JSON object")
        if "device_id" in raw:  # the skeleton's one-device format
            zone = f"{raw['tenant']}/{raw['zone']}"
            return cls(
                raw["kind"], (raw["device_id"],), raw["start_ts"], raw["end_ts"], zones=(zone,)
            )
        return cls(
            kind=str(raw["kind"]),
            devices=tuple(str(d) for d in raw["devices"]),
            start=float(raw["start"]),
            end=float(raw["end"]),
            label=str(raw.get("label", ATTACK)),
            zones=tuple(str(z) for z in raw.get("zones", ())),
            scenario=str(raw.get("scenario", "")),
            detail=str(raw.get("detail", "")),
        )


def read_truth(path: Path | str) -> list[GroundTruth]:
    """Every label of a ground-truth JSONL file (blank lines skipped)."""
    lines = Path(path).read_bytes().splitlines()
    return [GroundTruth.from_json(line) for line in lines if line.strip()]


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
        out = {**metrics, "upload_kbps": round(metrics["upload_kbps"] * self.factor, 1)}
        # What leaves the camera on the wire grows with it.
        for name in ("net_bytes_out", "net_pkts_out"):
            if name in metrics:
                out[name] = round(metrics[name] * self.factor)
        return out


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
        truth = GroundTruth.one(
            CameraUploadSurge.KIND, device, round(start, 3), round(start + self.duration_s, 3)
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
