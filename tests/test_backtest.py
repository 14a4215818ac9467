"""`sentinel backtest`: the comparison, row → Record, the merge, and runs on the real InfluxDB."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncGenerator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from typer.testing import CliRunner

from detectors.model import DeviceRef, Record
from sentinel.agent import build_decoder
from sentinel.backtest import BacktestError, parse_when, truth_in_scope
from sentinel.backtest_compare import FiredAlert, compare, days_between, per_day
from sentinel.backtest_source import (
    Columns,
    InfluxSource,
    http_error,
    merge_by_time,
    prefetched,
    row_to_record,
    select_query,
)
from sentinel.cli import app
from sentinel.config import Config, InfluxConfig
from sentinel.store.influx import InfluxHttp
from sentinel.store.lineprotocol import lines_for
from simulators.anomalies import GroundTruth
from simulators.scenario import load_scenario
from simulators.scenario_run import prepare
from tests.conftest import Stack, free_port, influxql
from tests.stack_env import secret

CAM = DeviceRef("lyon", "gerland", "video", "cam-1")
CAM_ELSEWHERE = DeviceRef("villeurbanne", "gerland", "video", "cam-1")  # same id, other tenant


def fired(
    start: float, end: float | None, detector: str = "surge", device: DeviceRef = CAM
) -> FiredAlert:
    return FiredAlert(detector, device, start, end)


# --- comparison ---------------------------------------------------------------------------


def test_identical_lists_match_entirely() -> None:
    alerts = [fired(100, 200), fired(1000, None), fired(50, 60, "heat")]
    cmp = compare(alerts, list(alerts), horizon=5000, tolerance_s=0)
    assert len(cmp.matched) == 3
    assert cmp.gained == []
    assert cmp.lost == []


def test_tolerance_decides_whether_near_alerts_match() -> None:
    base = [fired(100, 1000)]
    near = compare([fired(1300, 1400)], base, horizon=5000, tolerance_s=300)
    assert len(near.matched) == 1
    assert (near.gained, near.lost) == ([], [])
    far = compare([fired(1300.5, 1400)], base, horizon=5000, tolerance_s=300)
    assert far.matched == []
    assert far.gained == [fired(1300.5, 1400)]
    assert far.lost == base


def test_detector_and_whole_device_must_agree() -> None:
    base = [fired(100, 200, "surge", CAM)]
    other_detector = compare([fired(100, 200, "heat", CAM)], base, horizon=1000)
    assert [a.detector for a in other_detector.gained] == ["heat"]
    assert [a.detector for a in other_detector.lost] == ["surge"]
    other_tenant = compare([fired(100, 200, "surge", CAM_ELSEWHERE)], base, horizon=1000)
    assert [a.device for a in other_tenant.gained] == [CAM_ELSEWHERE]
    assert [a.device for a in other_tenant.lost] == [CAM]


def test_still_firing_alert_lasts_until_the_horizon() -> None:
    base = [fired(100, None)]  # raised, never resolved in the window
    assert len(compare([fired(4000, 4100)], base, horizon=5000, tolerance_s=0).matched) == 1
    late = compare([fired(4000, 4100)], base, horizon=3000, tolerance_s=0)
    assert (len(late.gained), len(late.lost)) == (1, 1)


def test_matching_is_one_to_one_and_counts_add_up() -> None:
    # The new configuration flaps: two alerts where the baseline had one long one.
    new = [fired(100, 200), fired(400, 500), fired(9000, 9100), fired(20, 30, "heat")]
    base = [fired(50, 1000), fired(6000, 6100), fired(20, 30, "heat"), fired(40, 45, "heat")]
    cmp = compare(new, base, horizon=10_000, tolerance_s=0)
    assert [(n.start, b.start) for n, b in cmp.matched] == [(20, 20), (100, 50)]
    assert [a.start for a in cmp.gained] == [400, 9000]
    assert [a.start for a in cmp.lost] == [40, 6000]
    for name, d in cmp.by_detector.items():
        assert d.new - d.baseline == d.gained - d.lost, name
        assert d.new == d.matched + d.gained
        assert d.baseline == d.matched + d.lost
    assert cmp.by_detector["surge"].to_dict() == {
        "new": 3,
        "baseline": 2,
        "matched": 1,
        "gained": 2,
        "lost": 1,
    }


def test_alerts_per_day_follow_the_time_zone_and_keep_empty_days() -> None:
    paris = ZoneInfo("Europe/Paris")
    since = datetime(2026, 11, 23, 0, 0, tzinfo=paris).timestamp()
    until = datetime(2026, 11, 26, 0, 0, tzinfo=paris).timestamp()
    late = datetime(2026, 11, 23, 23, 30, tzinfo=UTC).timestamp()  # 00:30 on the 24th in Paris
    days = days_between(since, until, paris)
    assert [d.isoformat() for d in days] == ["2026-11-23", "2026-11-24", "2026-11-25"]
    counts = per_day([fired(late, None), fired(since + 60, since + 120, "heat")], days, paris)
    assert counts == {"2026-11-23": {"heat": 1}, "2026-11-24": {"surge": 1}, "2026-11-25": {}}
    assert len(days_between(since, until, UTC)) == 4  # UTC: 23:00 on the 22nd to 23:00 on the 25th


# --- rows from InfluxDB -----------------------------------------------------------------------

# The columns of `select_query` when a device also sent a metric called `zone`: the tag comes
# last as `zone_1`.
COLUMNS = ["time", "seq", "upload_kbps", "zone", "tenant", "zone_1", "device_id"]


def test_row_to_record_rebuilds_what_the_agent_decoded() -> None:
    cols = Columns.parse(COLUMNS)
    rec = row_to_record("video", cols, [1764374400250, 17, 3950, 2.5, "lyon", "gerland", "c-1"], 64)
    assert rec == Record(
        DeviceRef("lyon", "gerland", "video", "c-1"),
        1764374400.25,
        {"upload_kbps": 3950.0, "zone": 2.5},
        17,
    )
    assert isinstance(rec, Record)
    assert all(type(v) is float for v in rec.metrics.values())
    # Null fields were not sent; no `seq` field is no seq.
    partial = row_to_record("video", cols, [1000, None, 1.5, None, "t", "z", "d"], 64)
    assert isinstance(partial, Record)
    assert (partial.metrics, partial.seq, partial.ts) == ({"upload_kbps": 1.5}, None, 1.0)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ([1000, 1, 1.0, None, "t", "z"], "bad_row"),  # a column short
        (["1970-01-01T00:00:01Z", 1, 1.0, None, "t", "z", "d"], "bad_time"),
        ([1000, 1, 1.0, None, "t", "", "d"], "bad_tag"),
        ([1000, 1, 1.0, None, "t", "z", "d\x1b[2J"], "bad_tag"),  # terminal escapes
        ([1000, 1, 1.0, None, "t", "z", "d" * 65], "bad_tag"),
        ([1000, 1, None, None, "t", "z", "d"], "no_metrics"),
        ([1000, 1, "text", True, "t", "z", "d"], "no_metrics"),  # not numbers: not metrics
        ([1000, 1, 1.0, 2.0, "t", "z", "d"], "too_many_metrics"),  # the cap below is 1
        ([1000, 1, 1.0, float("inf"), "t", "z", "d"], "non_finite"),
    ],
)
def test_row_to_record_skips_bad_rows_with_a_reason(row: list[Any], reason: str) -> None:
    cap = 1 if reason == "too_many_metrics" else 64
    assert row_to_record("video", Columns.parse(COLUMNS), row, cap) == reason


def test_negative_or_non_integer_seq_is_dropped() -> None:
    cols = Columns.parse(COLUMNS)
    for bad in (-1, 1.5, True):
        rec = row_to_record("video", cols, [1000, bad, 1.0, None, "t", "z", "d"], 64)
        assert isinstance(rec, Record)
        assert rec.seq is None


def test_columns_must_be_time_fields_tags() -> None:
    with pytest.raises(BacktestError):
        Columns.parse(["seq", "tenant", "zone", "device_id"])
    with pytest.raises(BacktestError):
        Columns.parse(["time", "zone", "device_id"])


def test_query_escapes_filters_and_selects_tags_last() -> None:
    q = select_query("video", 1000, 2000, tenant="a'b", zone="c\\d")
    assert q.startswith('SELECT *::field, "tenant"::tag, "zone"::tag, "device_id"::tag FROM')
    assert "time >= 1000000000 AND time < 2000000000" in q
    assert "\"tenant\"::tag = 'a\\'b'" in q
    assert "\"zone\"::tag = 'c\\\\d'" in q


def test_refusals_name_the_problem_without_the_password() -> None:
    src = InfluxSource("http://db:8086", "sentinel", "reader", "hunter2")
    e401 = str(http_error(401, b'{"error":"authorization failed"}', src))
    assert "refused the credentials of 'reader'" in e401
    e403 = str(http_error(403, b'{"error":"not authorized"}', src))
    assert "may not read database 'sentinel'" in e403
    assert "hunter2" not in e401 + e403 + repr(src)


async def _chunks(chunks: list[list[Record]]) -> AsyncGenerator[list[Record]]:
    for c in chunks:
        await asyncio.sleep(0)
        yield c


def _stream(kind: str, times: list[float], chunk: int) -> list[list[Record]]:
    dev = DeviceRef("t", "z", kind, f"{kind}-1")
    recs = [Record(dev, t, {"x": 1.0}) for t in sorted(times)]
    return [recs[i : i + chunk] for i in range(0, len(recs), chunk)]


async def test_merge_by_time_orders_across_streams_a_chunk_at_a_time() -> None:
    rng = random.Random(7)
    streams = {
        kind: _stream(kind, [round(rng.uniform(0, 1000), 1) for _ in range(n)], chunk)
        for kind, n, chunk in (("lighting", 500, 7), ("mobility", 300, 50), ("video", 0, 5))
    }
    out: list[Record] = []
    async for batch in merge_by_time([_chunks(c) for c in streams.values()]):
        assert len(batch) <= 7 + 50  # never more than one chunk per stream
        out += batch
    assert len(out) == 800
    assert [r.ts for r in out] == sorted(r.ts for r in out)
    assert {r.device.kind for r in out} == {"lighting", "mobility"}


async def test_a_read_error_reaches_the_reader_through_the_prefetch() -> None:
    async def failing() -> AsyncGenerator[list[Record]]:
        yield _stream("video", [1.0, 2.0], 2)[0]
        raise BacktestError("InfluxDB query failed: boom")

    got: list[float] = []

    async def read() -> None:
        async for batch in merge_by_time([prefetched(failing()), prefetched(_chunks([]))]):
            got.extend(r.ts for r in batch)

    with pytest.raises(BacktestError, match="boom"):
        await read()
    assert got == [1.0, 2.0]


# --- options and truth ------------------------------------------------------------------------


def test_parse_when() -> None:
    now = 1_800_000_000.0
    assert parse_when("now", now, UTC) == now
    assert parse_when("7d", now, UTC) == now - 7 * 86_400
    assert parse_when("2h30m", now, UTC) == now - 9_000
    paris = ZoneInfo("Europe/Paris")
    naive = parse_when("2026-11-23T10:00", now, paris)
    assert naive == datetime(2026, 11, 23, 9, 0, tzinfo=UTC).timestamp()
    assert parse_when("2026-11-23T10:00+00:00", now, paris) == naive + 3600
    for bad in ("yesterday", "7x", "2026-13-01"):
        with pytest.raises(BacktestError, match="--since"):
            parse_when(bad, now, UTC, "--since")


def test_truth_in_scope_keeps_events_the_window_and_filters_can_see() -> None:
    def ev(start: float, end: float, zone: str = "lyon/gerland") -> GroundTruth:
        return GroundTruth("k", ("d",), start, end, zones=(zone,) if zone else ())

    events = [
        ev(0, 50),
        ev(50, 150),
        ev(150, 250),
        ev(300, 400),
        ev(120, 130, "villeurbanne/x"),
        ev(120, 130, ""),
    ]
    assert truth_in_scope(events, 100, 300) == events[1:3] + events[4:]
    assert truth_in_scope(events, 100, 300, tenant="lyon") == [*events[1:3], events[5]]
    assert truth_in_scope(events, 100, 300, zone="x") == events[4:]


def _config(path: Path, detectors: list[dict[str, Any]], influx: dict[str, Any]) -> Path:
    lines = ["[influxdb]", *(f"{k} = {json.dumps(v)}" for k, v in influx.items())]
    for d in detectors:
        params = d.pop("params")
        lines += ["", "[[detectors]]", *(f"{k} = {json.dumps(v)}" for k, v in d.items())]
        lines += ["[detectors.params]", *(f"{k} = {json.dumps(v)}" for k, v in params.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_unreachable_influxdb_exits_2_naming_it(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = _config(tmp_path / "c.toml", [], {"url": url, "username": "x", "password": "y"})
    out = CliRunner().invoke(app, ["backtest", "-c", str(cfg), "--baseline", str(cfg)])
    assert out.exit_code == 2, out.output
    assert f"cannot reach InfluxDB at {url}" in out.output


def test_missing_baseline_exits_2_naming_it(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "c.toml", [], {"url": "http://127.0.0.1:1"})
    missing = tmp_path / "nope.toml"
    out = CliRunner().invoke(app, ["backtest", "-c", str(cfg), "--baseline", str(missing)])
    assert out.exit_code == 2
    assert f"baseline configuration {missing} does not exist" in out.output


# --- on the real InfluxDB -----------------------------------------------------------------------

SCENARIO = """
name = "backtest-surge"
summary = "A camera uploads ten times what it films for 20 minutes."
[run]
devices = 40
days = 0.1
seed = 5
[[events]]
kind = "camera_upload_surge"
label = "attack"
offset = "40m"
duration = "20m"
targets = { kind = "video", count = 1 }
[[events.effects]]
type = "scale"
metrics = { upload_kbps = 10 }
"""
START = "2026-11-23T10:00:00+01:00"  # fixed: the same telemetry every run
UNTIL = "2026-11-23T12:30:00+01:00"  # after the 0.1-day run


def _detectors(surge_kbps: float) -> list[dict[str, Any]]:
    return [
        {  # the same in both: its alerts must all match
            "name": "busy-road",
            "type": "threshold",
            "kinds": ["mobility"],
            "params": {"metric": "vehicles", "op": ">", "value": 9, "raise_after": 1},
        },
        {
            "name": "camera-upload-surge",
            "type": "threshold",
            "kinds": ["video"],
            "severity": "critical",
            "params": {"metric": "upload_kbps", "op": ">", "value": surge_kbps, "raise_after": 3},
        },
    ]


async def _write(stack: Stack, db: str, records: list[Any]) -> None:
    cfg = InfluxConfig(url=stack.influx_url, database=db, password=secret("influx-agent"))
    async with aiohttp.ClientSession() as session:
        http = InfluxHttp(session, cfg)
        lines = lines_for(records)
        for i in range(0, len(lines), 5000):
            await http.write("\n".join(lines[i : i + 5000]).encode())


class History:
    def __init__(self, stack: Stack, db: str, root: Path) -> None:
        self.stack, self.db, self.root = stack, db, root
        self.scenario = root / "scenario.toml"
        self.scenario.write_text(SCENARIO, encoding="utf-8")
        run = prepare(load_scenario(self.scenario), start=datetime.fromisoformat(START).timestamp())
        decoder = build_decoder(Config())
        decoded = [decoder.decode(m.topic, m.payload, m.ts) for m in run.messages()]
        self.records = [r for r in decoded if isinstance(r, Record)]
        self.statuses = len(decoded) - len(self.records)
        self.truth = run.truth[0]
        attacked = next(r.device for r in self.records if r.device.device_id in self.truth.devices)
        self.attacked = attacked
        influx = {
            "url": stack.influx_url,
            "database": db,
            "username": stack.env["STACK_INFLUX_USER"],
            "password_file": str(Path(stack.env["STACK_SECRETS_DIR"]) / "influx-agent.password"),
        }
        self.new = _config(root / "new.toml", _detectors(15_000), influx)
        self.base = _config(root / "base.toml", _detectors(50_000), influx)

    def backtest(self, *args: str) -> tuple[int, str]:
        """Exit code, and stdout (or everything printed when the command failed)."""
        argv = ["backtest", "-c", str(self.new), "--baseline", str(self.base)]
        argv += ["--since", START, "--until", UNTIL, "--window", "15m", "--chunk-size", "500"]
        out = CliRunner().invoke(app, [*argv, *args])
        return out.exit_code, out.stdout if out.exit_code == 0 else out.output


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    from tests.stack_env import require_stack  # noqa: PLC0415

    stack = Stack(require_stack("influxdb"))
    db = f"test_backtest_{uuid.uuid4().hex[:10]}"
    user = stack.env["STACK_INFLUX_USER"]
    asyncio.run(influxql(stack, f'CREATE DATABASE "{db}"'))
    try:
        asyncio.run(influxql(stack, f'GRANT ALL ON "{db}" TO "{user}"'))
        h = History(stack, db, tmp_path_factory.mktemp("backtest"))
        asyncio.run(_write(stack, db, h.records))
        yield h
    finally:
        asyncio.run(influxql(stack, f'DROP DATABASE "{db}"'))


def _gains(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["detector"], a["device_id"]) for a in doc["comparison"]["gained"]]


@pytest.mark.stack
def test_backtest_finds_the_attack_the_new_threshold_catches(history: History) -> None:
    h = history
    code, output = h.backtest("--scenario", str(h.scenario), "--start", START, "--json")
    assert code == 0, output
    doc = json.loads(output)
    # Everything written was read back, in order, as records.
    assert doc["read"]["records"] == len(h.records)
    assert doc["read"]["skipped_rows"] == {}
    assert doc["read"]["devices"] == len({r.device.device_id for r in h.records})
    # The one difference between the configurations shows up as one gained alert, on the
    # attacked camera, during the attack; the shared detector's alerts all match.
    assert _gains(doc) == [("camera-upload-surge", h.truth.devices[0])]
    gained = doc["comparison"]["gained"][0]
    assert h.truth.start <= gained["start"] <= h.truth.end
    assert doc["comparison"]["lost"] == []
    shared = doc["comparison"]["by_detector"]["busy-road"]
    assert shared["matched"] == shared["new"] == shared["baseline"] > 5
    assert doc["new"]["alerts"] == doc["baseline"]["alerts"] + 1

    def spans(alerts: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
        return {(a["detector"], a["device_id"], a["start"], a["end"]) for a in alerts}

    # Cross-check against the raw lists: the shared detector raised the very same alerts.
    new_list, base_list = doc["new"]["alert_list"], doc["baseline"]["alert_list"]
    assert spans(new_list) - spans(base_list) == spans(doc["comparison"]["gained"])
    assert spans(base_list) <= spans(new_list)
    assert doc["baseline"]["alerts_by_detector"].get("camera-upload-surge", 0) == 0
    # Recall goes up: the scenario's one attack, missed by the baseline, caught by the new one.
    assert doc["truth"]["events_total"] == 1
    new, base = doc["new"]["score"]["overall"], doc["baseline"]["score"]["overall"]
    assert (base["attacks"], base["detected"], base["recall"]) == (1, 0, 0.0)
    assert (new["attacks"], new["detected"], new["recall"]) == (1, 1, 1.0)
    assert new["true_alerts"] == 1
    assert new["precision"] > base["precision"] == 0.0
    assert sum(doc["new"]["alerts_per_day"]["2026-11-23"].values()) == doc["new"]["alerts"]


@pytest.mark.stack
def test_backtest_tenant_filter_and_human_table(history: History) -> None:
    h = history
    other = next(r.device.tenant for r in h.records if r.device.tenant != h.attacked.tenant)
    code, output = h.backtest("--tenant", other, "--json")
    assert code == 0, output
    doc = json.loads(output)
    assert doc["read"]["records"] == sum(1 for r in h.records if r.device.tenant == other)
    assert doc["comparison"]["gained"] == []
    code, text = h.backtest("--tenant", h.attacked.tenant, "--zone", h.attacked.zone)
    assert code == 0, text
    assert "Gained: 1 alert(s)" in text
    assert h.attacked.device_id in text


@pytest.mark.stack
def test_backtest_exits_2_on_wrong_password_or_empty_window(history: History) -> None:
    wrong = history.root / "wrong.password"
    wrong.write_text("not-the-password\n", encoding="utf-8")
    code, output = history.backtest("--password-file", str(wrong))
    assert code == 2
    assert "refused the credentials of 'sentinel-agent'" in output
    code, output = history.backtest("--tenant", "no-such-tenant")
    assert code == 2
    assert "no telemetry" in output
    assert "tenant 'no-such-tenant'" in output
