"""Columns: a batch seen as columns, and the threshold rule's column path against its own
per-record loop."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from detectors.columns import NO_SEQ, Columns, DeviceTable
from detectors.model import DeviceRef, Record
from detectors.threshold import ThresholdParams, ThresholdRule

REFS = [DeviceRef("t", f"z{i % 3}", ("video", "lighting")[i % 2], f"d{i}") for i in range(12)]
LAYOUTS = [("a", "b"), ("b", "a"), ("a",), ("c", "a", "b"), ()]


def _stream(rng: random.Random, n: int, devices: int = len(REFS)) -> list[Record]:
    """Records of a few devices (each several times), metric layouts mixed, some values on
    exact lines (ties), some without seq."""
    out = []
    for i in range(n):
        names = rng.choice(LAYOUTS)
        metrics = {name: float(rng.choice([0, 1, 2, 3, 5, 8, -0.0, 2.5])) for name in names}
        seq = None if rng.random() < 0.1 else rng.randrange(0, 2**40)
        out.append(Record(rng.choice(REFS[:devices]), 1000.0 + i, metrics, seq))
    return out


def test_columns_hold_each_records_fields_and_nan_for_an_absent_metric() -> None:
    rng = random.Random(1)
    records = _stream(rng, 300)
    columns = Columns.of(records, DeviceTable())
    assert len(columns) == 300
    for name in ("a", "b", "c", "missing"):
        got = columns.column(name).tolist()
        want = [r.metrics.get(name, math.nan) for r in records]
        assert [repr(v) for v in got] == [repr(v) for v in want]  # -0.0 kept, NaN where absent
    assert columns.ts.tolist() == [r.ts for r in records]
    assert columns.seq.tolist() == [NO_SEQ if r.seq is None else r.seq for r in records]
    refs = [columns.table.refs[s] for s in columns.slots.tolist()]
    assert refs == [r.device for r in records]


def test_select_keeps_the_chosen_rows_in_order_with_their_metrics() -> None:
    rng = random.Random(2)
    records = _stream(rng, 200)
    columns = Columns.of(records, DeviceTable())
    rows = np.array(sorted(rng.sample(range(200), 77)), dtype=np.int64)
    part = columns.select(rows)
    assert list(part.records) == [records[i] for i in rows.tolist()]
    assert part.slots.tolist() == columns.slots[rows].tolist()
    for name in ("a", "b", "c"):
        assert np.array_equal(part.column(name), columns.column(name)[rows], equal_nan=True)
    assert columns.select(np.arange(200, dtype=np.int64)) is columns


@pytest.mark.parametrize("devices", [1, 3, 12])
def test_segments_are_the_longest_runs_without_a_device_twice(devices: int) -> None:
    rng = random.Random(devices)
    records = _stream(rng, 150, devices)
    columns = Columns.of(records, DeviceTable())
    cuts = columns.segments()
    assert cuts[0].start == 0
    assert cuts[-1].stop == len(records)
    for cut, following in itertools.pairwise(cuts):
        assert cut.stop == following.start
        ids = [r.device for r in records[cut]]
        assert len(set(ids)) == len(ids)  # no device twice within a run
        assert records[following.start].device in ids  # and it could not be one row longer


def test_a_released_slot_is_reused_and_nothing_else_moves() -> None:
    table = DeviceTable()
    first = table.slots(REFS[:5]).tolist()
    assert first == [0, 1, 2, 3, 4]
    assert table.slots([REFS[3], REFS[3], REFS[5], REFS[5]]).tolist() == [3, 3, 5, 5]
    assert sorted(table.release({"d1", "d4"})) == [1, 4]
    assert REFS[1] not in table.slot_of
    assert table.refs[1] is None
    again = table.slots([REFS[6], REFS[7], REFS[8]]).tolist()
    assert sorted(again[:2]) == [1, 4]
    assert again[2] == 6
    assert len(table) == 7
    assert table.slots(REFS[:1]).tolist() == [0]


def _rule(**params: object) -> ThresholdRule:
    base: dict[str, object] = {"metric": "a", "raise_after": 2, "clear_after": 2}
    return ThresholdRule(ThresholdParams.model_validate({**base, **params}))


RULES = [
    {"op": ">", "value": 2},
    {"op": ">=", "value": 2, "raise_after": 1, "clear_after": 1},
    {"op": "<", "value": 1, "raise_after": 3},
    {"op": "<=", "value": 0},
    {"op": "==", "value": 0, "clear_after": 3},
    {"op": "!=", "value": 2, "raise_after": 4},
    {"op": "in", "values": [0, 5]},
    {"op": "not_in", "values": [1, 2, 3]},
    {"op": ">", "value": 2, "for_s": 2.5},
]


@pytest.mark.parametrize("params", RULES, ids=lambda p: f"{p['op']}{p.get('value_from', '')}")
def test_threshold_column_path_gives_the_per_record_transitions(params: dict[str, object]) -> None:
    """Cut the same stream into random batches: the column path (rows of uninvolved devices
    skipped) and the per-record loop raise and clear the very same alerts, in order."""
    for seed in range(20):
        rng = random.Random(seed)
        records = _stream(rng, 400, devices=rng.choice([1, 4, 12]))
        by_rows, by_columns, table = _rule(**params), _rule(**params), DeviceTable()
        want, got = [], []
        start = 0
        while start < len(records):
            batch = records[start : start + rng.choice([1, 2, 7, 50, 400])]
            start += len(batch)
            want += by_rows.update(batch)
            got += by_columns.update_columns(Columns.of(batch, table))
        assert repr(got) == repr(want)
        assert by_columns.state_dict() == by_rows.state_dict()
    assert want  # the stream does raise
