"""A million hostile payloads, and the cardinality attack among them (50,000 invented device
ids), straight into the agent's pipeline with the real InfluxDB behind it, in CI.

The broker path is tested with 200,000 of the same messages in test_stack_hostile.py (a
million through the broker takes longer than CI allows on 2 cores; SENTINEL_TEST_STRESS_N there
runs it). Here the same families go through the code that faces them, decode → admission →
store → detectors → alerts, batch by batch as the agent feeds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from sentinel import logs
from sentinel.agent import build_decoder
from sentinel.alerting.build import build_book
from sentinel.config import Config
from sentinel.deadletter import DeadLetters
from sentinel.decode import Reason
from sentinel.engine import Engine, build_instances
from sentinel.metrics import Metrics
from sentinel.pipeline import Pipeline
from sentinel.store.influx import InfluxHttp, InfluxWriter
from tests.conftest import FleetTopics, Stack, agent_config, influxql, poll_rows, rows
from tests.test_stack_hostile import CAP, DEADLETTERS, expected, hostile

pytestmark = pytest.mark.stack

TOTAL = 1_000_000
BATCH = 2000
RULE = {
    "name": "lamp-overdraw",
    "type": "threshold",
    "kinds": ["lighting", "video"],
    "params": {"metric": "power_w", "op": ">", "value": 1000, "raise_after": 3},
}


@contextlib.asynccontextmanager
async def pipeline_to_influxdb(cfg: Config, metrics: Metrics) -> AsyncIterator[Pipeline]:
    """The agent's pipeline with its real InfluxDB writer; everything written on exit."""
    async with aiohttp.ClientSession() as session:
        writer = InfluxWriter(InfluxHttp(session, cfg.influxdb), cfg.influxdb, metrics)
        writing = asyncio.create_task(writer.run())
        yield Pipeline(
            decoder=build_decoder(cfg),
            store=writer,
            engine=Engine(build_instances(cfg.detectors)),
            book=build_book(cfg, metrics),
            notifiers=[],
            metrics=metrics,
            deadletters=DeadLetters(DEADLETTERS),
            max_devices=CAP,
        )
        left = await writer.flush()
        writing.cancel()
    assert left == 0, f"{left} lines not written"


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def test_a_million_hostile_payloads_through_the_pipeline(
    stack: Stack, influx_db: str, fleet: FleetTopics, tmp_path: Path
) -> None:
    logs.configure("info")  # as `sentinel run` does: one rejection is a counter, not a line
    now = time.time()
    want = expected(fleet, now, TOTAL)
    cfg: Config = agent_config(
        stack,
        influx_db,
        fleet.root,
        detectors=[RULE],
        validation={"max_devices": CAP},
        deadletter={"capacity": DEADLETTERS},
    )
    metrics = Metrics()
    peak_before = rss_mib()
    async with pipeline_to_influxdb(cfg, metrics) as pipeline:
        started = time.monotonic()
        for start in range(0, TOTAL, BATCH):
            batch = [hostile(fleet, i, now)[:2] for i in range(start, start + BATCH)]
            await pipeline.process(batch, time.time())
        elapsed = time.monotonic() - started
    stored = await poll_rows(
        stack,
        influx_db,
        'SELECT count("power_w") FROM "lighting"',
        lambda r: bool(r) and r[0]["count"] >= want["stored"],
        within_s=60,
    )
    invented = rows(await influxql(stack, 'SELECT count("power_w") FROM "video"', influx_db))
    tags = rows(
        await influxql(
            stack,
            'SHOW TAG VALUES EXACT CARDINALITY FROM "lighting", "video" WITH KEY = "device_id"',
            influx_db,
        )
    )
    print(
        f"{TOTAL:,} payloads in {elapsed:.0f} s ({TOTAL / elapsed:,.0f}/s);"
        f" peak RSS {peak_before:.0f} -> {rss_mib():.0f} MiB"
    )
    counted = Counter({r: n for r, n in pipeline.rejected.items() if n})
    assert counted == Counter({r: n for r, n in want.items() if r in set(Reason)})
    assert pipeline.accepted == want["stored"] + want["stored_invented"]
    assert stored[0]["count"] == want["stored"]
    assert invented[0]["count"] == want["stored_invented"]
    assert sum(t["count"] for t in tags) <= CAP  # InfluxDB device tags stay bounded
    assert len(pipeline.admission.known) == CAP
    assert len(pipeline.deadletters) == DEADLETTERS
    assert pipeline.deadletters.total == sum(counted.values())
    flood = [a for a in pipeline.book.active.values() if a.source.name == "device-cap"]
    assert len(flood) == 1
    series = sum(len(next(iter(m.collect())).samples) for m in [metrics.rejects, metrics.alerts])
    assert series < 100  # labels carry reasons and detector names, never an id
    assert rss_mib() - peak_before < 300


async def test_a_million_invented_device_ids_stay_under_the_caps(
    stack: Stack, influx_db: str, fleet: FleetTopics
) -> None:
    """The cardinality attack: 1,000,000 new device ids, one valid message each."""
    logs.configure("info")
    cfg: Config = agent_config(
        stack, influx_db, fleet.root, detectors=[RULE], validation={"max_devices": CAP}
    )
    metrics = Metrics()
    peak_before = rss_mib()
    now = time.time()
    async with pipeline_to_influxdb(cfg, metrics) as pipeline:
        body = b'{"ts": %.3f, "metrics": {"power_w": 2000}}' % now
        for start in range(0, TOTAL, BATCH):
            batch = [
                (
                    fleet.telemetry("lyon", f"z{i % 97}", "video", f"x-{i:07d}-{i * 7919 % 10007}"),
                    body,
                )
                for i in range(start, start + BATCH)
            ]
            await pipeline.process(batch, time.time())

    tags = rows(
        await influxql(
            stack,
            'SHOW TAG VALUES EXACT CARDINALITY FROM "video" WITH KEY = "device_id"',
            influx_db,
        )
    )
    assert pipeline.rejected == Counter({"device_cap": TOTAL - CAP})
    assert len(pipeline.admission.known) == CAP
    assert sum(t["count"] for t in tags) == CAP
    assert sum(inst.detector.tracked_devices() for inst in pipeline.engine.instances) <= CAP
    flood = [a for a in pipeline.book.active.values() if a.source.name == "device-cap"]
    assert len(flood) == 1
    assert metrics.registry.get_sample_value("sentinel_tracked_devices") == CAP
    assert rss_mib() - peak_before < 300
