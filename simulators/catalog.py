"""Hardware the simulated fleet is made of: kinds, sub-types, models and firmware.

Model names are generic on purpose (no vendor's product is implied).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

LIGHTING: Final = "lighting"
MOBILITY: Final = "mobility"
VIDEO: Final = "video"
KINDS: Final = (LIGHTING, MOBILITY, VIDEO)

# Device-id infix per kind, as in `lyon-lum-00042`.
ID_INFIX: Final = {LIGHTING: "lum", MOBILITY: "mob", VIDEO: "cam"}

# Fleet mix (the brief: ~50 % lighting, 30 % mobility, 20 % video).
KIND_SHARE: Final = {LIGHTING: 0.5, MOBILITY: 0.3, VIDEO: 0.2}

# Reporting period per kind, seconds.
CADENCE_S: Final = {LIGHTING: 60, MOBILITY: 30, VIDEO: 10}

STREETLIGHT: Final = "streetlight"
TRAFFIC_COUNTER: Final = "traffic_counter"
PARKING_SENSOR: Final = "parking_sensor"
BIKE_DOCK: Final = "bike_dock"
CAMERA: Final = "camera"

# Sub-types per kind with their share inside the kind.
SUBTYPES: Final[dict[str, tuple[tuple[str, float], ...]]] = {
    LIGHTING: ((STREETLIGHT, 1.0),),
    MOBILITY: ((TRAFFIC_COUNTER, 0.4), (PARKING_SENSOR, 0.4), (BIKE_DOCK, 0.2)),
    VIDEO: ((CAMERA, 1.0),),
}


@dataclass(frozen=True, slots=True)
class LampModel:
    name: str
    share: float
    nominal_w: float
    # Illuminance delivered on the street at full output, lux.
    street_lux: float
    # Output level of the night-time dimming programme, percent.
    night_dim_pct: float
    # Driver (or ballast) temperature rise above ambient at full power, °C.
    temp_rise_c: float


LAMP_MODELS: Final = (
    LampModel("led-36w", 0.30, 36.0, 12.0, 50.0, 18.0),
    LampModel("led-54w", 0.30, 54.0, 18.0, 50.0, 20.0),
    LampModel("led-72w", 0.20, 72.0, 24.0, 50.0, 22.0),
    LampModel("led-100w", 0.10, 100.0, 30.0, 50.0, 25.0),
    # Legacy sodium lamps on bi-power ballasts cannot go much below 60 %.
    LampModel("hps-150w", 0.10, 150.0, 28.0, 60.0, 35.0),
)


@dataclass(frozen=True, slots=True)
class CameraModel:
    name: str
    share: float
    # Typical daytime H.264/H.265 stream bitrate, kbit/s.
    day_kbps: float


CAMERA_MODELS: Final = (
    CameraModel("dome-4mp", 0.45, 4300.0),
    CameraModel("bullet-8mp", 0.25, 5000.0),
    CameraModel("ptz-2mp", 0.30, 3400.0),
)

MOBILITY_MODELS: Final = {
    TRAFFIC_COUNTER: (("radar-tc2", 0.6), ("loop-tc1", 0.4)),
    PARKING_SENSOR: (("magneto-ps3", 1.0),),
    BIKE_DOCK: (("dock-bd20", 1.0),),
}

# Firmware versions in the field per kind, oldest last; a few laggards make patch drift visible.
FIRMWARE: Final[dict[str, tuple[tuple[str, float], ...]]] = {
    LIGHTING: (("3.2.1", 0.70), ("3.1.4", 0.25), ("2.9.0", 0.05)),
    MOBILITY: (("1.8.2", 0.80), ("1.7.9", 0.20)),
    VIDEO: (("5.7.3", 0.75), ("5.6.0", 0.20), ("4.9.12", 0.05)),
}
