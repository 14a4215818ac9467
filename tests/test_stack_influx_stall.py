"""InfluxDB frozen (SIGSTOP) for a few seconds under a stream: it answers nothing, yet fails
no write before the client's timeout. Points older than `spool_lag_s` go to the spool, so
acknowledgements, and with them the broker's flow to the agent, go on; everything is stored
once InfluxDB runs again."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import orjson
import pytest

from tests.conftest import (
    FleetTopics,
    Stack,
    agent_config,
    influxql,
    poll_rows,
    rows,
    running_agent,
)
from tests.mqtt_util import publish_paced
from tests.stack_env import service_pid

pytestmark = pytest.mark.stack

RATE = 1000  # messages per second
STALL_S = 6.0


async def test_a_frozen_influxdb_delays_storage_not_acknowledgements(
    stack: Stack, influx_db: str, fleet: FleetTopics, tmp_path: Path
) -> None:
    total = RATE * 15
    now = time.time()
    messages = [
        (
            fleet.telemetry("lyon", "gerland", "mobility", f"lyo-mob-{i % 500:05d}"),
            orjson.dumps({"ts": now - 3600 + i * 0.01, "seq": i, "metrics": {"vehicles": i % 29}}),
        )
        for i in range(total)
    ]
    cfg = agent_config(
        stack,
        influx_db,
        fleet.root,
        influxdb={"spool_dir": str(tmp_path / "spool"), "spool_lag_s": 1.0, "timeout_s": 30.0},
    )
    influxd = service_pid("influxdb")
    async with running_agent(cfg) as agent:
        reg = agent.metrics.registry
        publisher = asyncio.create_task(publish_paced(stack.mqtt_url, messages, RATE))
        await asyncio.sleep(3)
        os.kill(influxd, signal.SIGSTOP)
        try:
            acked_before = reg.get_sample_value("sentinel_mqtt_acked_total") or 0.0
            await asyncio.sleep(STALL_S)
            acked_after = reg.get_sample_value("sentinel_mqtt_acked_total") or 0.0
        finally:
            os.kill(influxd, signal.SIGCONT)
        await publisher
        query = 'SELECT count("vehicles") FROM "mobility"'
        stored = await poll_rows(
            stack, influx_db, query, lambda r: bool(r) and r[0]["count"] >= total, within_s=120
        )
        spooled = reg.get_sample_value("sentinel_spooled_points_total") or 0.0
    distinct = rows(
        await influxql(stack, 'SELECT count(distinct("seq")) FROM "mobility"', influx_db)
    )
    # Acks went on while InfluxDB answered nothing: the spool made the points durable.
    assert acked_after - acked_before > RATE * STALL_S / 2
    assert spooled > RATE * STALL_S / 2
    assert stored[0]["count"] == total
    assert distinct[0]["count"] == total
