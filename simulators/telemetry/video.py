"""Video-protection cameras: a stream whose bitrate follows daylight, uploaded as it is made."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simulators import catalog, sun
from simulators.fleet import Device
from simulators.telemetry.base import Columns, TelemetryModel

_FPS = 25
_FPS_DROP_RATE = 0.002
# Night (infrared, little motion) streams are lighter than daytime ones.
_NIGHT_SHARE = 0.68
# RTP/TCP framing on top of the encoded stream.
_UPLOAD_OVERHEAD = 0.015


class Camera(TelemetryModel):
    def __init__(self, devices: Sequence[Device], seed: int) -> None:
        super().__init__(devices, seed)
        self.day_kbps = self.per_model({m.name: m.day_kbps for m in catalog.CAMERA_MODELS})
        self.day_kbps *= self.trait(1, 0.9, 1.1)
        # Edge storage fills until the retention policy purges the oldest footage.
        self.storage_low = self.trait(2, 30.0, 45.0)
        self.storage_high = self.trait(3, 85.0, 95.0)
        self.storage_cycle_s = self.trait(4, 20.0, 60.0) * sun.DAY_S
        self.storage_phase = self.trait(5)
        # Maintenance reboots, weekly to every few weeks.
        self.reboot_every_s = self.trait(6, 7.0, 45.0) * sun.DAY_S
        self.reboot_phase = self.trait(7)

    def metrics(self, rows: np.ndarray, t: np.ndarray, report: np.ndarray) -> Columns:
        daylight = np.clip((sun.sin_altitude(t) + 0.05) / 0.25, 0.0, 1.0)
        level = _NIGHT_SHARE + (1 - _NIGHT_SHARE) * daylight
        bitrate = self.day_kbps[rows] * level * (1 + 0.04 * self.normal(rows, report, 1))
        upload = bitrate * (1 + _UPLOAD_OVERHEAD + 0.01 * self.normal(rows, report, 2))
        dropped = self.uniform(rows, report, 3) < _FPS_DROP_RATE
        fps = np.where(dropped, 15 + np.floor(10 * self.uniform(rows, report, 4)), _FPS)

        cycle = self.storage_cycle_s[rows]
        filled = (t / cycle + self.storage_phase[rows]) % 1.0
        low = self.storage_low[rows]
        storage = low + (self.storage_high[rows] - low) * filled

        every = self.reboot_every_s[rows]
        uptime = (t + self.reboot_phase[rows] * every) % every
        return {
            "bitrate_kbps": np.round(bitrate, 1),
            "fps": fps.astype(np.int64),
            "upload_kbps": np.round(upload, 1),
            "storage_pct": np.round(storage, 2),
            "uptime_s": uptime.astype(np.int64),
        }
