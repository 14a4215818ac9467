"""InfluxDB away for a minute under a 2,000 msg/s stream: every record stored exactly once."""

from __future__ import annotations

import asyncio
import os
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
from tests.stack_env import start_stack, stop_service

pytestmark = pytest.mark.stack

RATE = 2000  # messages per second
OUTAGE_S = float(os.environ.get("SENTINEL_TEST_OUTAGE_S", "60"))


async def test_influxdb_away_under_load_loses_nothing(
    stack: Stack, influx_db: str, fleet: FleetTopics, tmp_path: Path
) -> None:
    total = int(RATE * (OUTAGE_S + 15))
    now = time.time()
    messages = counter_reports(fleet, "villeurbanne", "la-doua", 1000, total, now - 7200)
    cfg = agent_config(
        stack,
        influx_db,
        fleet.root,
        influxdb={"spool_dir": str(tmp_path / "spool"), "spool_after_s": 2.0, "retry_max_s": 2.0},
    )
    async with running_agent(cfg) as agent:
        publisher = asyncio.create_task(publish_paced(stack.mqtt_url, messages, RATE))
        await asyncio.sleep(5)
        await asyncio.to_thread(stop_service, "influxdb")
        try:
            await asyncio.sleep(OUTAGE_S)
            reg = agent.metrics.registry
            spooled_bytes = reg.get_sample_value("sentinel_spool_bytes")
            acked_during_outage = reg.get_sample_value("sentinel_mqtt_acked_total")
        finally:
            await asyncio.to_thread(start_stack)
        await publisher
        stored, distinct = await stored_reports(stack, influx_db, total)
        spooled = agent.metrics.registry.get_sample_value("sentinel_spooled_points_total")
    print(f"spooled {spooled:.0f} points ({spooled_bytes:.0f} bytes at the end of the outage)")
    assert spooled_bytes
    assert spooled
    assert spooled > RATE * (OUTAGE_S / 2)  # the spool, not memory, carried the outage
    assert acked_during_outage
    assert acked_during_outage > RATE * OUTAGE_S / 2  # acks went on: the broker was not the buffer
    assert stored == total
    assert distinct == total
    assert not list((tmp_path / "spool").glob("segment-*.lp"))  # drained
