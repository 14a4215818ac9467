from __future__ import annotations

from pathlib import Path

import orjson

from sentinel.store.locations import location_lines


def test_only_devices_with_a_valid_position_are_mapped(tmp_path: Path) -> None:
    base = {"tenant": "lyon", "zone": "gerland", "kind": "video", "ip": "10.3.0.1"}
    devices = [
        {**base, "device_id": "ok", "lat": 45.73, "lon": 4.83},
        {**base, "device_id": "int", "lat": 45, "lon": 5},
        {**base, "device_id": "nolat", "lon": 4.83},
        {**base, "device_id": "text", "lat": "45.7", "lon": 4.8},
        {**base, "device_id": "bool", "lat": True, "lon": 4.8},
        {**base, "device_id": "south", "lat": -91.0, "lon": 4.8},
        {**base, "device_id": "huge", "lat": 45.0, "lon": 1e309},
    ]
    path = tmp_path / "inventory.json"
    path.write_bytes(orjson.dumps(devices))
    assert location_lines(path, 1.5) == [
        "device_location,tenant=lyon,zone=gerland,kind=video,device_id=ok lat=45.73,lon=4.83 1500",
        "device_location,tenant=lyon,zone=gerland,kind=video,device_id=int lat=45.0,lon=5.0 1500",
    ]
