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

import pytest

from tests.conftest import (
    FleetTopics,
    Stack,
    agent_config,
    running_agent,
)
from tests.counter_stream import counter_reports, stored_reports
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
    messages = counter_reports(fleet, "lyon", "gerland", 500, total, now - 3600)
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
        stored, distinct = await stored_reports(stack, influx_db, total)
        spooled = reg.get_sample_value("sentinel_spooled_points_total") or 0.0
    # Acks went on while InfluxDB answered nothing: the spool made the points durable.
    assert acked_after - acked_before > RATE * STALL_S / 2
    assert spooled > RATE * STALL_S / 2
    assert stored == total
    assert distinct == total
