"""inventory: a device never seen in the learning period, or not in the inventory, raises once."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors import registry
from detectors.base import Detector
from detectors.model import DeviceRef, Record

T0 = 1_700_000_000.0
KNOWN = [DeviceRef("lyon", "gerland", "mobility", f"mob-{i}") for i in range(3)]
ROGUE = DeviceRef("lyon", "gerland", "mobility", "mob-x")


def make(**params: object) -> Detector:
    return registry.create("inventory", registry.parse_params("inventory", params))


def reports(devices: list[DeviceRef], start: float, end: float) -> list[Record]:
    return [
        Record(d, ts, {"vehicles": 1.0}, info={"client_id": d.device_id, "src_ip": "10.0.0.9"})
        for ts in range(int(start), int(end), 30)
        for d in devices
    ]


def test_a_device_first_seen_after_the_learning_period_raises_once() -> None:
    detector = make(learn_s=600, hold_s=1800)
    changes = detector.update(reports(KNOWN, T0, T0 + 3600))
    changes += detector.update(reports([*KNOWN, ROGUE], T0 + 3600, T0 + 7200))
    assert [(t.device, t.firing) for t in changes] == [(ROGUE, True), (ROGUE, False)]
    raised = changes[0]
    assert raised.ts == T0 + 3600
    assert raised.evidence["src_ip"] == "10.0.0.9"
    assert raised.evidence["condition"] == "unknown device"


def test_a_known_device_coming_back_after_a_silence_stays_quiet() -> None:
    detector = make(learn_s=600)
    records = reports(KNOWN, T0, T0 + 1200) + reports(KNOWN, T0 + 5000, T0 + 6000)
    assert detector.update(records) == []


def test_an_inventory_file_decides_from_the_first_report(tmp_path: Path) -> None:
    path = tmp_path / "inventory.txt"
    path.write_text("# enrolled\nmob-0\nmob-1\nmob-2\n")
    detector = make(inventory_file=str(path))
    changes = detector.update(reports([*KNOWN, ROGUE], T0, T0 + 60))
    assert [t.device for t in changes if t.firing] == [ROGUE]


def test_inventory_and_file_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        make(inventory=["a"], inventory_file="/x")


def test_flagged_devices_are_bounded() -> None:
    detector = make(learn_s=0, max_new=5)
    many = [DeviceRef("t", "z", "video", f"x-{i}") for i in range(50)]
    detector.update(reports(many, T0, T0 + 30))
    assert detector.tracked_devices() <= 5
