"""Which IP is which device: the fleet inventory (the simulator writes one).

A JSON list of objects with at least `device_id`, `ip`, `kind`, `tenant` and `zone`; other keys
are ignored, so the simulator's richer records load as they are.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from detectors.model import DeviceRef
from sentinel.errors import SentinelError
from sentinel.traffic.packet import ip_packed

_KEYS = ("device_id", "ip", "kind", "tenant", "zone")


class InventoryError(SentinelError):
    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def load_inventory(path: Path | str) -> dict[bytes, DeviceRef]:
    """Devices by packed IP address."""
    try:
        raw = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InventoryError(path, f"cannot read: {exc}") from None
    if not isinstance(raw, list):
        raise InventoryError(path, "an inventory is a JSON list of device objects")
    devices: dict[bytes, DeviceRef] = {}
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in _KEYS):
            raise InventoryError(path, f"device #{i} needs the string keys {', '.join(_KEYS)}")
        try:
            ip = ip_packed(entry["ip"])
        except OSError:
            raise InventoryError(path, f"device #{i}: {entry['ip']!r} is not an IP") from None
        if ip in devices:
            raise InventoryError(path, f"device #{i}: IP {entry['ip']} is listed twice")
        devices[ip] = DeviceRef(entry["tenant"], entry["zone"], entry["kind"], entry["device_id"])
    return devices
