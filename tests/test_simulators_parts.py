"""Building blocks of the simulator: clocks, sun, schedule, noise, broker URL, pacing, runner."""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators import localtime, noise, sun
from simulators.anomalies import AnomalySpec, GroundTruth
from simulators.effects import encode
from simulators.inventory import load_inventory
from simulators.messages import (
    Message,
    payload_head,
    payload_tail,
    plain_messages,
    telemetry_payloads,
)
from simulators.mqtt_session import BrokerUrl
from simulators.publisher import Pacer, PublishStats
from simulators.runner import SimulationConfig, run_simulation
from simulators.schedule import Schedule

PARIS = ZoneInfo("Europe/Paris")


@given(st.lists(st.floats(946_684_800, 4_102_444_800), min_size=1, max_size=50))
@settings(max_examples=50, deadline=None)
def test_lyon_wall_clock_matches_zoneinfo(times: list[float]) -> None:
    t = np.array(times)
    offsets = localtime.utc_offset_s(t)
    hours = localtime.local_hour(t)
    days = localtime.weekday(t)
    for i, x in enumerate(times):
        local = datetime.fromtimestamp(x, PARIS)
        offset = local.utcoffset()
        assert offset is not None
        assert offsets[i] == offset.total_seconds()
        assert hours[i] == pytest.approx(
            local.hour + local.minute / 60 + local.second / 3600, abs=1e-3
        )
        assert days[i] == local.weekday()


@pytest.mark.parametrize(
    ("day", "sunrise", "sunset"),
    # Lyon, civil times from published almanacs (minute precision).
    [("2025-06-21", "05:51", "21:33"), ("2025-12-21", "08:20", "16:58")],
)
def test_sunrise_sunset_in_lyon(day: str, sunrise: str, sunset: str) -> None:
    unix_day = np.array(
        [int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) // 86_400]
    )
    rise, set_ = sun.sunrise_sunset(unix_day)
    for got, want in ((rise[0], sunrise), (set_[0], sunset)):
        expected = datetime.fromisoformat(f"{day} {want}").replace(tzinfo=PARIS).timestamp()
        assert abs(got - expected) < 5 * 60


def test_night_table_adds_up() -> None:
    days = np.array([sun.FIRST_DAY + 100, sun.FIRST_DAY + 9_000])
    total = sun.nights_between(days[:1], days[1:])
    assert total[0] == pytest.approx(sun.night_s(np.arange(days[0], days[1])).sum())


@given(
    cadences=st.lists(st.sampled_from([10, 30, 60, 15, 20]), min_size=1, max_size=12),
    data=st.data(),
)
@settings(max_examples=40, deadline=None)
def test_schedule_matches_brute_force(cadences: list[int], data: st.DataObject) -> None:
    cadence_ms = np.array(cadences, dtype=np.int64) * 1000
    phase_ms = np.array([data.draw(st.integers(0, c - 1)) for c in cadence_ms.tolist()])
    start = data.draw(st.integers(1_700_000_000_000, 1_700_001_000_000))
    end = start + data.draw(st.integers(0, 400_000))
    schedule = Schedule(cadence_ms, phase_ms)
    expected = sorted(
        (t, i)
        for i, (c, p) in enumerate(zip(cadence_ms.tolist(), phase_ms.tolist(), strict=True))
        for t in range(p + (start - p + c - 1) // c * c, end, c)
    )
    devices, times = schedule.between(start, end)
    assert sorted(zip(times.tolist(), devices.tolist(), strict=True)) == expected
    assert times.tolist() == sorted(times.tolist())
    batched = [
        (t, i)
        for d, ts in schedule.batches(start, end, data.draw(st.integers(1, 50)))
        for t, i in zip(ts.tolist(), d.tolist(), strict=True)
    ]
    assert [t for t, _ in batched] == [t for t, _ in expected]
    assert sorted(batched) == expected
    first = schedule.first_report_at_or_after(start)
    for t, i in expected:
        assert schedule.report_number(np.array([i]), np.array([t]))[0] >= first[i]


def test_noise_is_deterministic_uniform_and_seed_dependent() -> None:
    keys = noise.stream_keys(np.arange(100_000, dtype=np.uint64), seed=1)
    counter = np.arange(100_000)
    u = noise.uniform(keys, counter, 3)
    assert np.array_equal(u, noise.uniform(keys, counter, 3))
    assert u.min() >= 0
    assert u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01
    assert abs(np.corrcoef(u, noise.uniform(keys, counter, 4))[0, 1]) < 0.02
    other = noise.stream_keys(np.arange(100_000, dtype=np.uint64), seed=2)
    assert not np.array_equal(u, noise.uniform(other, counter, 3))
    z = noise.normal(keys, counter, 1)
    assert abs(z.mean()) < 0.02
    assert abs(z.std() - 1) < 0.02


# Values that JSON writes in unusual ways: signed zeros, exponents, null for non-finite numbers.
_ODD_FLOATS = [0.0, -0.0, 1e16, -1e-7, 5e-324, 1.7976931348623157e308, math.nan, math.inf, 0.1]
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)


def _column(
    values: st.SearchStrategy[Any], rows: int, dtype: type
) -> st.SearchStrategy[np.ndarray]:
    """A metric column of a few distinct values, so that it is often one value throughout."""
    return (
        st.lists(values, min_size=1, max_size=3)
        .flatmap(lambda few: st.lists(st.sampled_from(few), min_size=rows, max_size=rows))
        .map(lambda column: np.array(column, dtype=dtype))
    )


def _ints(rows: int) -> st.SearchStrategy[np.ndarray]:
    """Small counts, big counters, negatives."""
    ints = st.integers(-(2**63), 2**63 - 1) | st.integers(0, 5_000)
    return _column(ints, rows, np.int64)


def _floats(rows: int) -> st.SearchStrategy[np.ndarray]:
    return _column(st.floats() | st.sampled_from(_ODD_FLOATS), rows, np.float64)


@given(data=st.data(), rows=st.integers(0, 12))
@settings(max_examples=150, deadline=None)
def test_batch_payloads_are_what_orjson_makes_of_each_report(
    data: st.DataObject, rows: int
) -> None:
    names = data.draw(st.lists(_TEXT, max_size=6, unique=True))
    columns = {name: data.draw(_ints(rows) | _floats(rows)) for name in names}
    ids = data.draw(st.lists(_TEXT, min_size=rows, max_size=rows))
    infos = [data.draw(st.dictionaries(_TEXT, _TEXT, max_size=3)) for _ in range(rows)]
    ts = data.draw(_floats(rows))
    seq = data.draw(_ints(rows))

    got = telemetry_payloads(
        [payload_head(i) for i in ids], ts, seq, columns, [payload_tail(i) for i in infos]
    )

    want = [
        encode(
            ids[r],
            ts[r].item(),
            seq[r].item(),
            {n: c[r].item() for n, c in columns.items()},
            infos[r],
        )
        for r in range(rows)
    ]
    assert got == want


def test_batch_payloads_odd_cases() -> None:
    """0.0 and -0.0 are equal but written apart; `%` in a key or an id is plain text."""
    columns = {"z%s": np.array([0.0, -0.0, 0.0]), "%b": np.array([7, 7, 7]), "n": np.ones(3)}
    ts, seq = np.full(3, 1.5), np.arange(3)
    ids, info = ["a%b", "b", "c%%"], {"k%s": "v%b"}
    got = telemetry_payloads(
        [payload_head(i) for i in ids], ts, seq, columns, [payload_tail(info)] * 3
    )
    metrics = [{n: c[r].item() for n, c in columns.items()} for r in range(3)]
    assert got == [encode(ids[r], 1.5, r, metrics[r], info) for r in range(3)]
    assert b'"z%s":-0.0' in got[1]


def test_batch_payloads_take_numbers_only() -> None:
    with pytest.raises(TypeError, match="numbers"):
        telemetry_payloads(
            [payload_head("d")],
            np.zeros(1),
            np.zeros(1, np.int64),
            {"m": np.array(["x"])},
            [payload_tail({})],
        )


def test_plain_messages_are_messages_with_the_default_fields() -> None:
    made = list(plain_messages([1.5, 2.0], ["a/t", "b/t"], [b"{}", b"[]"], ["a", "b"]))
    assert made == [Message(1.5, "a/t", b"{}", "a"), Message(2.0, "b/t", b"[]", "b")]
    assert all(type(m) is Message and m.qos == 1 and not m.retain and not m.origin for m in made)


def test_broker_url() -> None:
    assert BrokerUrl.parse("mqtt://127.0.0.1:18830") == BrokerUrl("127.0.0.1", 18830, False)
    assert BrokerUrl.parse("mqtts://broker.example") == BrokerUrl("broker.example", 8883, True)
    assert BrokerUrl.parse("mqtt://localhost") == BrokerUrl("localhost", 1883, False)
    for bad in ("http://x", "mqtt://", "mqtt://host/path"):
        with pytest.raises(ValueError, match="scheme"):
            BrokerUrl.parse(bad)
    with pytest.raises(ValueError, match="separately") as err:
        BrokerUrl.parse("mqtt://sim:hunter2@host")
    assert "hunter2" not in str(err.value)


class FakeSink:
    def __init__(self) -> None:
        self.published = self.acked = self.errors = self.disconnects = 0
        self.sent: list[tuple[float, Message]] = []

    def publish(self, message: Message, give_up: threading.Event) -> None:
        self.sent.append((time.monotonic(), message))
        self.published += 1
        self.acked += 1

    def drain(self, timeout_s: float) -> bool:
        return True


def messages(n: int, every_s: float) -> list[Message]:
    return [Message(1_000.0 + i * every_s, "t", b"{}", "d") for i in range(n)]


def test_pacer_spreads_messages_over_wall_time() -> None:
    sink = FakeSink()
    progress: list[PublishStats] = []
    stats = Pacer(sink, speed=10.0, wall_start=None, stop_after_s=None).run(
        messages(41, 0.1),
        progress.append,  # 4 simulated seconds at 10x
    )
    assert stats.published == stats.acked == 41
    assert stats.sim_ts == 1_004.0
    spread = sink.sent[-1][0] - sink.sent[0][0]
    assert 0.35 < spread < 1.5
    assert progress
    assert progress[-1] == stats


def test_pacer_publishes_late_messages_at_once_and_stops_on_time() -> None:
    sink = FakeSink()
    # Started 100 wall seconds ago: everything is late, nothing may sleep.
    late = Pacer(sink, speed=1.0, wall_start=time.time() - 100, stop_after_s=None)
    began = time.monotonic()
    assert late.run(messages(5_000, 0.01), lambda _: None).published == 5_000
    assert time.monotonic() - began < 1.0
    assert late.lag_s > 40

    sink = FakeSink()
    stopped = Pacer(sink, speed=1.0, wall_start=None, stop_after_s=0.3)
    stats = stopped.run(messages(100, 0.1), lambda _: None)
    assert 2 <= stats.published <= 6


def test_pacer_speed_inf_is_unpaced() -> None:
    stats = Pacer(FakeSink(), speed=math.inf, wall_start=None, stop_after_s=None).run(
        messages(1_000, 3_600.0), lambda _: None
    )
    assert stats.published == 1_000
    assert stats.elapsed_s < 1.0


async def test_dry_run_ends_now_and_writes_files(tmp_path: Path) -> None:
    cfg = SimulationConfig(
        devices=30,
        seed=3,
        speed=60.0,
        duration_s=60.0,
        mqtt_url=None,
        inventory_path=tmp_path / "inventory.json",
        truth_path=tmp_path / "truth.jsonl",
        anomalies=(AnomalySpec(None, start_offset_s=600, duration_s=300),),
    )
    before = time.time()
    summary = await run_simulation(cfg)
    assert summary.publish is None
    assert before - 5 < summary.sim_end_ts <= time.time()
    assert summary.sim_end_ts - summary.sim_start_ts == pytest.approx(3_600)
    assert summary.messages > 30 * 60
    assert len(load_inventory(tmp_path / "inventory.json")) == 30
    lines = (tmp_path / "truth.jsonl").read_text().splitlines()
    assert [GroundTruth.from_json(x) for x in lines] == list(summary.ground_truth)
    assert orjson.loads(lines[0])["start"] == pytest.approx(summary.sim_start_ts + 600, abs=1e-3)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="speed"):
        SimulationConfig(speed=0)
    assert "hunter2" not in repr(SimulationConfig(password="hunter2"))
