"""Stopped mid-stream (SIGTERM or SIGKILL), then restarted: every message the broker accepted
is stored, exactly once."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.agent_process import start_agent, write_config
from tests.conftest import FleetTopics, Stack, free_port, influxql, poll_rows, rows
from tests.mqtt_util import publish_all

pytestmark = pytest.mark.stack


def stream(fleet: FleetTopics, total: int) -> list[tuple[str, bytes]]:
    now = time.time()
    return [
        (
            fleet.telemetry("lyon", "gerland", "lighting", f"lyon-lum-{i % 500:05d}"),
            orjson.dumps({"ts": now - 3600 + i * 0.1, "seq": i, "metrics": {"power_w": i % 97}}),
        )
        for i in range(total)
    ]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
async def test_stopped_midstream_then_restarted_loses_nothing(
    stack: Stack, influx_db: str, fleet: FleetTopics, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    config = tmp_path / "agent.toml"
    write_config(config, stack, influx_db, fleet.root, f"agent-{fleet.root[-10:]}")
    total = 30_000  # more than the broker's in-flight window: acks must flow
    first = await start_agent(config)
    publisher = asyncio.create_task(publish_all(stack.mqtt_url, stream(fleet, total)))
    await asyncio.sleep(0.5)  # stop the agent while the stream is flowing
    err = await first.stop(stop_signal)
    await publisher
    if stop_signal == signal.SIGTERM:
        assert b"agent_stopped" in err
    query = 'SELECT count("power_w") FROM "lighting"'
    stored_before_restart = rows(await influxql(stack, query, influx_db))
    second = await start_agent(config)
    stored = await poll_rows(
        stack, influx_db, query, lambda r: bool(r) and r[0]["count"] >= total, within_s=60
    )
    await second.stop()
    print(f"stored before restart: {stored_before_restart}; after: {stored[0]['count']}")
    assert stored_before_restart, "the first agent stored nothing before it was stopped"
    assert 0 < stored_before_restart[0]["count"] < total, "the stop did not land mid-stream"
    assert stored[0]["count"] == total
    distinct = rows(
        await influxql(stack, 'SELECT count(distinct("seq")) FROM "lighting"', influx_db)
    )
    assert distinct[0]["count"] == total


async def test_detectors_resume_from_their_checkpoint_after_sigkill(
    stack: Stack, influx_db: str, fleet: FleetTopics, tmp_path: Path
) -> None:
    config, port = tmp_path / "agent.toml", free_port()
    write_config(
        config,
        stack,
        influx_db,
        fleet.root,
        f"cp-{fleet.root[-10:]}",
        http_port=port,
        extra=f"""
[checkpoint]
path = "{tmp_path / "checkpoint.json"}"
interval_s = 0.2
[[detectors]]
name = "surge"
type = "threshold"
kinds = ["video"]
[detectors.params]
metric = "upload_kbps"
op = ">"
value = 100
raise_after = 5
""",
    )
    topic = fleet.telemetry("lyon", "gerland", "video", "lyon-cam-00001")
    now = time.time()

    def points(first: int, n: int) -> list[tuple[str, bytes]]:
        return [
            (topic, orjson.dumps({"ts": now - 60 + i, "metrics": {"upload_kbps": 9000}}))
            for i in range(first, first + n)
        ]

    first = await start_agent(config)
    await publish_all(stack.mqtt_url, points(0, 3))  # three of the five points needed
    await poll_rows(
        stack,
        influx_db,
        'SELECT count("upload_kbps") FROM "video"',
        lambda r: bool(r) and r[0]["count"] == 3,
    )
    await asyncio.sleep(1.0)  # a few checkpoint intervals
    await first.stop(signal.SIGKILL)

    second = await start_agent(config)
    await publish_all(stack.mqtt_url, points(3, 2))
    active: list[object] = []
    deadline = time.monotonic() + 10
    async with aiohttp.ClientSession() as http:
        while not active and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            body = await (await http.get(f"http://127.0.0.1:{port}/api/alerts")).json()
            active = body["active"]
    log = await second.stop()
    assert len(active) == 1  # five points in all: the count survived the SIGKILL
    assert b'"checkpoint_loaded"' in log
    assert b'"surge"' in log
