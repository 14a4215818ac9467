"""Where the inventory's devices are: `device_location` points for the SOC's map (Grafana geomap).

Written once at start from `[traffic] inventory_file`, whose tags the agent has checked as it
checks telemetry's (`traffic.live.load_devices`); devices without a valid `lat`/`lon` (degrees,
WGS 84) are left out.
"""

from __future__ import annotations

import math
from pathlib import Path

import orjson


def _degrees(value: object, limit: float) -> float | None:
    if type(value) not in (int, float):  # not bool, not strings
        return None
    number = float(value)  # type: ignore[arg-type]  # int or float, checked above
    return number if math.isfinite(number) and -limit <= number <= limit else None


def location_lines(path: Path, ts: float) -> list[str]:
    lines = []
    for entry in orjson.loads(path.read_bytes()):
        lat, lon = _degrees(entry.get("lat"), 90), _degrees(entry.get("lon"), 180)
        if lat is None or lon is None:
            continue
        lines.append(
            f"device_location,tenant={entry['tenant']},zone={entry['zone']},kind={entry['kind']},"
            f"device_id={entry['device_id']} lat={lat!r},lon={lon!r} {round(ts * 1000)}"
        )
    return lines
