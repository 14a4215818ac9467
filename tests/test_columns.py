"""Columns: a batch seen as columns, and the threshold rule's column path against its own
per-record loop."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace

import numpy as np
import pytest

from detectors.columns import NO_SEQ, Columns, Keys, Reports
from detectors.model import DeviceRef, Record
from detectors.slots import DeviceTable, KeySpace
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


def _space() -> KeySpace:
    """REFS numbered by index, each device with one info object."""
    infos = [{"client_id": ref.device_id} for ref in REFS]
    return KeySpace(REFS, infos, np.array([id(i) for i in infos], dtype=np.int64))


def _numbered(
    rng: random.Random, n: int, space: KeySpace | None = None
) -> tuple[Reports, list[Record]]:
    """Reports whose devices a producer numbered, as the simulator hands them over; and the
    records they hold."""
    space = _space() if space is None else space
    keys = [rng.randrange(len(REFS)) for _ in range(n)]
    records = [
        replace(r, device=REFS[k], info=space.infos[k])
        for r, k in zip(_stream(rng, n), keys, strict=True)
    ]
    made = Reports.of_records(records)
    return replace(made, given=None, keys=Keys(space, np.array(keys, dtype=np.int64))), records


def test_numbered_reports_keep_their_numbers_through_slices_selections_and_joins() -> None:
    rng = random.Random(3)
    reports, records = _numbered(rng, 60)
    assert reports.info_ids().tolist() == [id(r.info) for r in records]
    rows = np.array(sorted(rng.sample(range(60), 25)), dtype=np.int64)
    unnumbered = Reports.of_records([replace(r, info=dict(r.info)) for r in records[:5]])
    parts = [reports.slice(0, 20), reports.select(rows), unnumbered, reports.slice(40, 60)]
    joined = Reports.join(parts)
    for part in [*parts[:2], joined]:
        assert part.keys is not None
        space = part.keys.space
        numbered = [i for i, k in enumerate(part.keys.rows.tolist()) if k >= 0]
        assert [space.refs[part.keys.rows[i]] for i in numbered] == [part.refs[i] for i in numbered]
        assert part.info_ids().tolist() == [id(info) for info in part.infos]
    assert joined.keys is not None
    assert joined.keys.rows[45:50].tolist() == [-1] * 5  # the unnumbered part's rows
    other, _ = _numbered(rng, 10)
    assert Reports.join([reports, other]).keys is None  # two spaces: no numbers


def test_numbered_slots_are_the_slots_of_the_refs_through_releases() -> None:
    rng = random.Random(5)
    table, by_refs, space = DeviceTable(), DeviceTable(), _space()
    for step in range(6):
        reports, _ = _numbered(rng, 40, space)
        if step % 2:  # some rows come unnumbered, as decoded messages do
            reports = Reports.join([reports, Reports.of_records(_stream(rng, 7))])
        got = Columns.of_reports(reports, table).slots
        assert [table.refs[s] for s in got.tolist()] == list(reports.refs)
        assert got.tolist() == by_refs.slots(reports.refs).tolist()  # same order of arrival
        gone = {f"d{rng.randrange(len(REFS))}" for _ in range(3)}
        assert sorted(table.release(gone)) == sorted(by_refs.release(gone))


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


def _kinds_by_slot(table: DeviceTable, refs: list[DeviceRef]) -> list[str]:
    slots = table.slots(refs)
    return [table.kind_names[c] for c in table.kind_codes[slots].tolist()]


def test_each_slot_knows_its_kind_through_reuse_and_recoding() -> None:
    table = DeviceTable()
    assert _kinds_by_slot(table, REFS) == [r.kind for r in REFS]
    # Many made-up kinds, then forgotten: the names are recoded to the live devices' kinds.
    odd = [DeviceRef("t", "z", f"kind{i}", f"x{i}") for i in range(100)]
    assert _kinds_by_slot(table, odd) == [r.kind for r in odd]
    table.release({r.device_id for r in odd})
    assert sorted(table.kind_names) == ["lighting", "video"]
    assert table.kind_codes[len(REFS) : len(table)].tolist() == [-1] * len(odd)  # free slots
    newcomers = [DeviceRef("t", "z", "mobility", f"m{i}") for i in range(3)]
    assert _kinds_by_slot(table, [*newcomers, *REFS]) == [r.kind for r in [*newcomers, *REFS]]
    records = _stream(random.Random(4), 50)
    records[7] = replace(records[7], device=newcomers[1])
    columns = Columns.of(records, table)
    rows: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        rows.setdefault(record.device.kind, []).append(i)
    assert columns.rows_of_kind() == rows
    assert columns.kind_counts() == {kind: len(at) for kind, at in rows.items()}


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
