"""The walking skeleton against the real Mosquitto, InfluxDB and the agent."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from sentinel.decode import Reason
from tests.conftest import (
    FleetTopics,
    Stack,
    agent_config,
    influxql,
    poll_rows,
    rows,
    running_agent,
)
from tests.mqtt_util import publish_all

pytestmark = pytest.mark.stack


def _whole(found: list[dict[str, Any]]) -> bool:
    return bool(found) and all(found[0].get(f) is not None for f in ("fps", "tamper", "seq"))


async def test_published_message_becomes_a_point_with_its_tags(
    stack: Stack, influx_db: str, fleet: FleetTopics
) -> None:
    ts = round(time.time() - 5, 3)
    payload = orjson.dumps(
        {"ts": ts, "seq": 7, "metrics": {"upload_kbps": 1234.5, "fps": 25, "tamper": False}}
    )
    status_topic = f"{fleet.root}/lyon/gerland/video/lyon-cam-00042/status"
    async with running_agent(agent_config(stack, influx_db, fleet.root)):
        await publish_all(
            stack.mqtt_url,
            [
                (fleet.telemetry("lyon", "gerland", "video", "lyon-cam-00042"), payload),
                (status_topic, b"offline"),
            ],
        )
        # InfluxDB 1.x keeps each field as its own series: a query racing the write can see a
        # point with some of its fields only (seen once in CI). Wait for the whole point.
        found = await poll_rows(stack, influx_db, 'SELECT * FROM "video" GROUP BY *', _whole)
        status = await poll_rows(stack, influx_db, 'SELECT * FROM "device_status" GROUP BY *', bool)
    assert len(found) == 1
    point = found[0]
    assert point["time"] == round(ts * 1000)
    assert (point["tenant"], point["zone"], point["device_id"]) == (
        "lyon",
        "gerland",
        "lyon-cam-00042",
    )
    assert (point["upload_kbps"], point["fps"], point["tamper"], point["seq"]) == (
        1234.5,
        25.0,
        0.0,
        7,
    )
    assert status[0]["online"] == 0
    assert status[0]["kind"] == "video"
    keys = rows(await influxql(stack, 'SHOW TAG KEYS FROM "video"', influx_db))
    assert {k["tagKey"] for k in keys} == {"tenant", "zone", "device_id"}


def malformed(fleet: FleetTopics, i: int, now: float) -> dict[Reason, tuple[str, bytes]]:
    """One payload of each kind of bad input the agent must refuse, varied by i."""
    good_topic = fleet.telemetry("lyon", "presquile", "lighting", f"lyon-lum-{i:05d}")

    def doc(**kw: object) -> bytes:
        base: dict[str, object] = {"ts": now, "metrics": {"power_w": 40.0 + i}}
        base.update(kw)
        return orjson.dumps(base)

    return {
        Reason.NOT_JSON: (good_topic, b"{power_w: %d" % i),
        Reason.BAD_TYPE: (good_topic, doc(metrics={"power_w": f"{i} W"})),
        Reason.MISSING_ID: (fleet.telemetry("lyon", "presquile", "lighting", ""), doc()),
        Reason.OVERSIZED: (good_topic, doc(pad="x" * (4096 + i))),
        Reason.NON_FINITE: (good_topic, b'{"ts": %f, "metrics": {"power_w": NaN}}' % now),
        Reason.TS_FUTURE: (good_topic, doc(ts=now + 86400 + i)),
        Reason.TS_PAST: (good_topic, doc(ts=now - 30 * 86400 - i)),
        Reason.UNKNOWN_KIND: (fleet.telemetry("lyon", "presquile", "drone", f"d-{i}"), doc()),
    }


async def test_malformed_payloads_are_counted_and_valid_ones_all_stored(
    stack: Stack, influx_db: str, fleet: FleetTopics
) -> None:
    per_reason = 1000
    now = time.time()
    messages: list[tuple[str, bytes]] = []
    sent: Counter[str] = Counter()
    for i in range(per_reason):
        for reason, message in malformed(fleet, i, now).items():
            messages.append(message)
            sent[reason] += 1
        valid_topic = fleet.telemetry("lyon", "confluence", "mobility", f"lyon-mob-{i % 50:05d}")
        valid = {"ts": now - i * 0.001, "seq": i, "metrics": {"vehicles": i % 17}}
        messages.append((valid_topic, orjson.dumps(valid)))
    cfg = agent_config(stack, influx_db, fleet.root)
    async with running_agent(cfg) as agent:
        await publish_all(stack.mqtt_url, messages)
        stored = await poll_rows(
            stack,
            influx_db,
            'SELECT count("vehicles") FROM "mobility"',
            lambda found: bool(found) and found[0]["count"] >= per_reason,
            within_s=30,
        )
        async with aiohttp.ClientSession() as http:
            health = await http.get(f"http://{cfg.http.listen}/healthz")
            assert health.status == 200
            dead = await (await http.get(f"http://{cfg.http.listen}/api/deadletters")).json()
        counted = {
            reason: agent.metrics.registry.get_sample_value(
                "sentinel_rejects_total", {"reason": reason}
            )
            for reason in sent
        }
    assert stored[0]["count"] == per_reason
    assert counted == {reason: float(n) for reason, n in sent.items()}
    # The dead-letter store is bounded: it keeps the newest entries only.
    assert dead["total"] == sum(sent.values())
    assert len(dead["recent"]) == 100
    assert len(agent.deadletters) == cfg.deadletter.capacity


def test_a_wrong_config_key_fails_at_start_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "sentinel.toml"
    bad.write_text('[influxdb]\nurl = "http://127.0.0.1:1"\nbatch_sise = 10\n')
    proc = subprocess.run(
        [sys.executable, "-m", "sentinel.cli", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "influxdb.batch_sise" in proc.stderr


async def test_a_small_inbox_pauses_reading_and_loses_nothing(
    stack: Stack, influx_db: str, fleet: FleetTopics
) -> None:
    total, high_water = 5000, 50
    now = time.time()
    messages = [
        (
            fleet.telemetry("lyon", "gerland", "video", f"lyon-cam-{i % 40:05d}"),
            orjson.dumps({"ts": now - i * 0.01, "seq": i, "metrics": {"fps": 25}}),
        )
        for i in range(total)
    ]
    cfg = agent_config(
        stack, influx_db, fleet.root, pipeline={"max_pending": high_water, "batch_max": 20}
    )
    async with running_agent(cfg) as agent:
        peak = 0

        async def watch_inbox() -> None:
            nonlocal peak
            while True:
                peak = max(peak, len(agent.inbox))
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch_inbox())
        await publish_all(stack.mqtt_url, messages)
        stored = await poll_rows(
            stack,
            influx_db,
            'SELECT count("fps") FROM "video"',
            lambda r: bool(r) and r[0]["count"] >= total,
            within_s=30,
        )
        watcher.cancel()
        await asyncio.sleep(cfg.influxdb.flush_interval_s)
        acked = agent.metrics.registry.get_sample_value("sentinel_mqtt_acked_total")
    assert stored[0]["count"] == total
    assert acked == total
    # Past the mark by at most one socket read: asyncio reads up to 256 KiB at a time, and the
    # native reader hands a whole read's messages over at once (paho: a few). Without the
    # pause, all 5,000 would pile up.
    smallest = min(len(topic) + len(payload) + 4 for topic, payload in messages)
    assert high_water <= peak < high_water + 256 * 1024 // smallest
