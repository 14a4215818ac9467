"""inventory: a device never seen in the learning period, or not in the inventory, raises once."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from detectors import registry
from detectors.base import Detector
from detectors.columns import Columns
from detectors.inventory import Inventory
from detectors.model import DeviceRef, Record, Transition
from tests.test_detectors_identity import feed, forgets_and_resumes_as_the_oracle

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


# --- The columnar path (update_columns) against the per-record code -------------------------


class PerRecordInventory(Inventory):
    """The oracle: no device is ever taken as settled, every row runs the per-record code."""

    def _row(
        self, columns: Columns, row: int, now: float, learning: bool, changes: list[Transition]
    ) -> bool:
        raised = super()._row(columns, row, now, learning, changes)
        self._settled[:] = False
        return raised


def inventory_stream(seed: int) -> list[Record]:
    """Known devices of two kinds, rogues arriving one by one after the learning period (more
    than `max_new`: the oldest flagged are dropped and may raise again), late records."""
    rng = random.Random(seed)
    cams = [DeviceRef("lyon", "gerland", "video", f"cam-{i}") for i in range(4)]
    rogues = [DeviceRef("lyon", "gerland", "mobility", f"rogue-{i}") for i in range(6)]
    records: list[Record] = []
    for k in range(400):
        ts = T0 + 15 * k
        present = [*KNOWN, *cams, *rogues[: max(0, (k - 60) // 40)]]
        if k % 97 == 0:
            present.append(DeviceRef("lyon", "gerland", "video", f"passing-{k}"))
        for d in rng.sample(present, len(present)):
            late = 120.0 if rng.random() < 0.03 else 0.0
            info = {"client_id": d.device_id, "src_ip": f"10.0.0.{len(d.device_id)}"}
            records.append(Record(d, ts + rng.random() * 10 - late, {"x": 1.0}, k, info))
    return records


CUTS: list[tuple[int | str, int]] = [(1, 0), (7, 0), (500, 0), (1 << 30, 0)] + [
    ("random", s) for s in range(3)
]
CUT_PARAMS: list[dict[str, object]] = [
    {"learn_s": 900, "hold_s": 600, "max_new": 3},
    {"inventory": [d.device_id for d in KNOWN], "hold_s": 300, "max_new": 4},
]


@pytest.mark.parametrize("params", CUT_PARAMS)
def test_the_columnar_path_gives_the_per_record_transitions_in_any_cut(
    params: dict[str, object],
) -> None:
    for seed in (1, 2):
        records = inventory_stream(seed)
        oracle = PerRecordInventory(registry.parse_params("inventory", params))
        expected = oracle.update(records)
        raised = [t.device.device_id for t in expected if t.firing]
        assert len(raised) > len(set(raised)) > 3  # several rogues, some raised twice
        assert len(expected) > len(raised)  # and cleared
        for how, cut_seed in CUTS:
            det = make(**params)
            assert repr(feed(det, records, how, cut_seed)) == repr(expected), (seed, how)
            assert json.dumps(det.state_dict()) == json.dumps(oracle.state_dict())


def test_the_columnar_path_forgets_and_continues_from_a_checkpoint() -> None:
    params = CUT_PARAMS[0]
    oracle = PerRecordInventory(registry.parse_params("inventory", params))
    expected = forgets_and_resumes_as_the_oracle(
        lambda: make(**params), oracle, inventory_stream(3), {"mob-1", "rogue-0"}, CUTS[1:]
    )
    assert any(t.device.device_id == "mob-1" for t in expected)  # forgotten, then unknown
