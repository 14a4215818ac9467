"""Telemetry models, one per device sub-type."""

from __future__ import annotations

from collections.abc import Sequence

from simulators import catalog
from simulators.fleet import Device
from simulators.telemetry.base import Columns, TelemetryModel
from simulators.telemetry.lighting import Lighting
from simulators.telemetry.mobility import BikeDock, ParkingSensor, TrafficCounter
from simulators.telemetry.video import Camera

MODELS: dict[str, type[TelemetryModel]] = {
    catalog.STREETLIGHT: Lighting,
    catalog.TRAFFIC_COUNTER: TrafficCounter,
    catalog.PARKING_SENSOR: ParkingSensor,
    catalog.BIKE_DOCK: BikeDock,
    catalog.CAMERA: Camera,
}


def model_for(subtype: str, devices: Sequence[Device], seed: int) -> TelemetryModel:
    model = MODELS.get(subtype)
    if model is None:
        raise ValueError(f"no telemetry model for sub-type {subtype!r}")
    return model(devices, seed)


__all__ = ["MODELS", "Columns", "TelemetryModel", "model_for"]
