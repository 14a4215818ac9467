"""Two agent replicas, each subscribed to half of the zones (`[mqtt] partition`), against the
real Mosquitto and InfluxDB: together they store every message once and raise exactly the
alerts one agent raises alone, with none raised twice."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.agent_process import start_agent, write_config
from tests.conftest import FleetTopics, Stack, free_port, influxql, poll_rows
from tests.mqtt_util import publish_all

pytestmark = pytest.mark.stack

ZONES = ("z0", "z1", "z2", "z3")
RULE = """
[[detectors]]
name = "camera-upload-surge"
type = "threshold"
kinds = ["video"]
[detectors.params]
metric = "upload_kbps"
op = ">"
value = 15000
raise_after = 3
clear_after = 3
"""


def stream(fleet: FleetTopics, tenant: str) -> list[tuple[str, bytes]]:
    """40 cameras, 30 reports each; every third camera surges for reports 10..19."""
    t0 = time.time() - 600
    out = []
    for k in range(30):
        for i in range(40):
            surge = i % 3 == 0 and 10 <= k < 20
            metrics = {"upload_kbps": 20_000.0 if surge else 3_000.0 + i}
            out.append(
                (
                    fleet.telemetry(tenant, ZONES[i % 4], "video", f"cam-{i:03d}"),
                    orjson.dumps({"ts": t0 + 10 * k, "seq": k, "metrics": metrics}),
                )
            )
    return out


def partition(tenant: str, zones: tuple[str, ...]) -> str:
    entries = ", ".join(f'{{tenant = "{tenant}", zone = "{z}"}}' for z in zones)
    return f"partition = [{entries}]"


def alerts(port: int) -> set[tuple[str, str, float, float | None]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/alerts?recent=1000") as resp:
        body: dict[str, Any] = orjson.loads(resp.read())
    return {
        (a["labels"]["detector"], a["labels"]["device_id"], a["starts_at"], a["ends_at"])
        for a in body["recent"]
    }


async def new_db(stack: Stack) -> str:
    name = f"test_{uuid.uuid4().hex[:12]}"
    await influxql(stack, f'CREATE DATABASE "{name}"')
    await influxql(stack, f'GRANT ALL ON "{name}" TO "{stack.env["STACK_INFLUX_USER"]}"')
    return name


async def test_two_replicas_give_the_alerts_of_one_agent_without_loss_or_duplicates(
    stack: Stack, influx_db: str, fleet: FleetTopics, tmp_path: Path
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    single_db = await new_db(stack)
    ports = {name: free_port() for name in ("a", "b", "single")}
    shares = {"a": ZONES[:2], "b": ZONES[2:], "single": ()}
    agents = []
    try:
        for name, zones in shares.items():
            path = tmp_path / f"{name}.toml"
            db = single_db if name == "single" else influx_db
            write_config(
                path,
                stack,
                db,
                fleet.root,
                f"{name}-{fleet.root[-10:]}",
                http_port=ports[name],
                extra=RULE,
            )
            if zones:  # the [mqtt] table is the first one in the file
                text = path.read_text().replace(
                    "[mqtt]\n", f"[mqtt]\n{partition(tenant, zones)}\n", 1
                )
                path.write_text(text)
            agents.append(await start_agent(path))
        messages = stream(fleet, tenant)
        await publish_all(stack.mqtt_url, messages)
        query = 'SELECT count("upload_kbps") FROM video'
        for db in (influx_db, single_db):
            stored = await poll_rows(
                stack,
                db,
                query,
                lambda r: bool(r) and r[0]["count"] >= len(messages),
                within_s=30,
            )
            assert stored[0]["count"] == len(messages)
        await asyncio.sleep(1.0)  # the last batch's alerts
        a, b, single = [await asyncio.to_thread(alerts, ports[n]) for n in ("a", "b", "single")]
    finally:
        for agent in agents:
            await agent.stop()
        await influxql(stack, f'DROP DATABASE "{single_db}"')
    assert len(single) == 14  # cameras 0, 3, ..., 39: raised and cleared once each
    assert all(end is not None for *_, end in single)
    assert a.isdisjoint(b)
    assert a | b == single
    assert {d for _, d, *_ in a} == {f"cam-{i:03d}" for i in range(0, 40, 3) if i % 4 < 2}
