from __future__ import annotations

from pathlib import Path

from detectors.model import DeviceRef, Record
from sentinel import checkpoint
from sentinel.config import DetectorConfig
from sentinel.engine import Engine, build_instances

CAM = DeviceRef("lyon", "gerland", "video", "cam-1")


def engine(raise_after: int = 3) -> Engine:
    cfg = DetectorConfig(
        name="surge",
        type="threshold",
        kinds=("video",),
        params={"metric": "upload_kbps", "op": ">", "value": 100, "raise_after": raise_after},
    )
    return Engine(build_instances([cfg]))


def feed(e: Engine, values: list[float], start: float = 0.0) -> list[bool]:
    out = []
    for i, v in enumerate(values):
        for _, transitions in e.process([Record(CAM, start + i, {"upload_kbps": v})]):
            out += [t.firing for t in transitions]
    return out


def test_a_restored_engine_carries_on_where_the_old_one_stopped(tmp_path: Path) -> None:
    path = tmp_path / "agent" / "checkpoint.json"
    before = engine()
    assert feed(before, [500, 500]) == []  # two of the three points needed to raise
    assert checkpoint.save(before, path) > 0
    after = engine()
    assert checkpoint.load(after, path) == ["surge"]
    assert feed(after, [500], start=2) == [True]  # the third point raises: nothing restarted
    fresh = engine()
    assert feed(fresh, [500], start=2) == []


def test_broken_or_foreign_checkpoints_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    assert checkpoint.load(engine(), path) == []  # none yet
    path.write_bytes(b"{not json")
    assert checkpoint.load(engine(), path) == []
    path.write_bytes(b'{"format": 1, "detectors": {"surge": {"type": "seasonal", "state": {}}}}')
    assert checkpoint.load(engine(), path) == []
    path.write_bytes(b'{"format": 1, "detectors": {"surge": {"type": "threshold", "state": 7}}}')
    assert checkpoint.load(engine(), path) == []


def test_the_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    e = engine()
    feed(e, [500])
    checkpoint.save(e, path)
    first = path.read_bytes()
    feed(e, [500], start=1)
    checkpoint.save(e, path)
    assert path.read_bytes() != first
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.json"]  # no temporary left


def test_a_checkpoint_from_another_version_of_a_state_class_is_skipped(tmp_path: Path) -> None:
    """Upgrades change slotted state classes (session 3 dropped `firing` from the threshold
    rule's): the old checkpoint must start that detector fresh, not stop the agent."""
    path = tmp_path / "checkpoint.json"
    before = engine(raise_after=1)
    assert feed(before, [500]) == [True]  # firing: its state is a slotted object
    checkpoint.save(before, path)
    text = path.read_text()
    assert '"fields":{"breaching"' in text.replace(" ", "")
    path.write_text(text.replace('"breaching"', '"firing":true,"breaching"', 1))
    after = engine(raise_after=1)
    assert checkpoint.load(after, path) == []
    assert feed(after, [500], start=1) == [True]  # fresh: raises again, nothing crashed
