"""The native MQTT reader ([mqtt] client = "native") against the real Mosquitto: the agent
stores everything over the plain and TLS listeners; what was not acked comes back after a
reconnect (persistent session); pause stops the reads and resume loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from sentinel.config import MqttConfig
from sentinel.inbox import Inbox
from sentinel.ingest import NativeReader
from sentinel.metrics import Metrics
from sentinel.topics import TopicPattern
from tests.conftest import (
    FleetTopics,
    Stack,
    agent_config,
    influxql,
    poll_rows,
    rows,
    running_agent,
)
from tests.mqtt_util import client_as, publish_all

pytestmark = pytest.mark.stack


def native(stack: Stack, tls: bool = False) -> dict[str, Any]:
    if not tls:
        return {"client": "native"}
    return {
        "client": "native",
        "url": stack.env["STACK_MQTTS_URL"],
        "ca_file": stack.env["STACK_CA_FILE"],
    }


def telemetry(
    fleet: FleetTopics, n: int, device_prefix: str = "lyon-cam"
) -> list[tuple[str, bytes]]:
    now = time.time()
    return [
        (
            fleet.telemetry("lyon", "gerland", "video", f"{device_prefix}-{i % 50:05d}"),
            orjson.dumps({"ts": now - 600 + i * 0.01, "seq": i, "metrics": {"fps": i % 30}}),
        )
        for i in range(n)
    ]


async def forget_session(stack: Stack, client_id: str) -> None:
    """A clean-session connect under the reader's id drops the session the test left."""
    async with client_as(stack.mqtt_url, "agent", identifier=client_id, clean_session=True):
        pass


@contextlib.asynccontextmanager
async def reader_on(
    cfg: MqttConfig, inbox: Inbox, metrics: Metrics | None = None
) -> AsyncIterator[NativeReader]:
    subscription = TopicPattern.parse(cfg.telemetry_topic).subscription
    reader = NativeReader(cfg, [subscription], inbox, metrics or Metrics())
    task = asyncio.create_task(reader.run())
    try:
        await asyncio.wait_for(reader.connected.wait(), 15)
        yield reader
    finally:
        reader.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_for_len(inbox: Inbox, n: int, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while len(inbox) < n and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def seqs(messages: list[tuple[str, bytes]]) -> list[int]:
    return [int(orjson.loads(payload)["seq"]) for _, payload in messages]


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_agent_with_the_native_reader_stores_everything(
    stack: Stack, influx_db: str, fleet: FleetTopics, tls: bool
) -> None:
    n = 3_000
    messages = telemetry(fleet, n)
    cfg = agent_config(stack, influx_db, fleet.root, mqtt=native(stack, tls))
    async with running_agent(cfg) as agent:
        assert isinstance(agent.reader, NativeReader)
        await publish_all(stack.mqtt_url, messages)
        await poll_rows(
            stack,
            influx_db,
            'SELECT count("fps") FROM "video"',
            lambda r: bool(r) and r[0]["count"] >= n,
            within_s=30,
        )
        deadline = time.monotonic() + 10
        registry = agent.metrics.registry
        while time.monotonic() < deadline:  # acks follow durability
            if registry.get_sample_value("sentinel_mqtt_acked_total") == n:
                break
            await asyncio.sleep(0.1)
        acked = registry.get_sample_value("sentinel_mqtt_acked_total")
        received = registry.get_sample_value("sentinel_messages_received_total", {"source": "mqtt"})
    stored = rows(await influxql(stack, 'SELECT "seq" FROM "video"', influx_db))
    assert sorted(int(r["seq"]) for r in stored) == list(range(n))
    assert (received, acked) == (n, n)
    await forget_session(stack, cfg.mqtt.client_id)


async def test_unacked_messages_come_back_after_a_reconnect(
    stack: Stack, fleet: FleetTopics
) -> None:
    n = 500
    messages = telemetry(fleet, n)
    cfg = agent_config(stack, "unused", fleet.root, mqtt=native(stack)).mqtt
    inbox, metrics = Inbox(high_water=10 * n, batch_max=10 * n), Metrics()
    async with reader_on(cfg, inbox, metrics) as reader:
        await publish_all(stack.mqtt_url, messages)
        await wait_for_len(inbox, n)
        held = await inbox.take(0)
        # The line drops before anything was acked (as a network fault would drop it).
        assert reader._conn is not None
        reader._conn.close("cut by the test")
        await wait_for_len(inbox, n)  # the persistent session sends them all again
        again = await inbox.take(0)
        assert metrics.registry.get_sample_value("sentinel_mqtt_reconnects_total") == 1
        assert reader.ack(held.acks) == 0  # acks of the first connection are stale
        assert reader.ack(again.acks) == n
        await asyncio.sleep(0.5)  # the PUBACKs reach the broker before the disconnect
    assert sorted(seqs(held.messages)) == list(range(n))
    assert sorted(seqs(again.messages)) == list(range(n))
    # A new agent process on the same session: the acked messages are gone for good.
    fresh = Inbox(high_water=10 * n, batch_max=10 * n)
    async with reader_on(cfg, fresh):
        await publish_all(stack.mqtt_url, telemetry(fleet, 1, "after"))
        await wait_for_len(fresh, 1)
        await asyncio.sleep(0.5)
    left = await fresh.take(0)
    assert [t.rsplit("/", 2)[1] for t, _ in left.messages] == ["after-00000"]
    await forget_session(stack, cfg.client_id)


async def test_unacked_messages_survive_a_restart_of_the_reader(
    stack: Stack, fleet: FleetTopics
) -> None:
    n = 300
    cfg = agent_config(stack, "unused", fleet.root, mqtt=native(stack)).mqtt
    first = Inbox(high_water=10 * n, batch_max=10 * n)
    async with reader_on(cfg, first):
        await publish_all(stack.mqtt_url, telemetry(fleet, n))
        await wait_for_len(first, n)
    second = Inbox(high_water=10 * n, batch_max=10 * n)
    async with reader_on(cfg, second) as reader:
        await wait_for_len(second, n)
        again = await second.take(0)
        assert reader.ack(again.acks) == n
        await asyncio.sleep(0.5)
    assert len(first) == n
    assert sorted(seqs(again.messages)) == list(range(n))
    await forget_session(stack, cfg.client_id)


async def test_pause_stops_reading_and_resume_loses_nothing(
    stack: Stack, fleet: FleetTopics
) -> None:
    n, high_water = 4_000, 200
    messages = telemetry(fleet, n)
    cfg = agent_config(stack, "unused", fleet.root, mqtt=native(stack)).mqtt
    inbox = Inbox(high_water=high_water, batch_max=100)
    alert_topic = f"sentinel/alerts/test-{uuid.uuid4().hex[:8]}/lyon/gerland/high"
    async with (
        reader_on(cfg, inbox) as reader,
        client_as(stack.mqtt_url, "operator") as operator,
    ):
        await operator.subscribe(alert_topic, qos=1)
        await publish_all(stack.mqtt_url, messages)
        await asyncio.sleep(1.0)
        # Paused at high water: the rest stays with the broker, not in our memory.
        held = len(inbox)
        assert high_water <= held < n // 2
        # A publish still goes out while reads are paused (the MQTT alert sink's case).
        assert reader.publish(alert_topic, b'{"state":"firing"}', qos=1)
        async with asyncio.timeout(10):
            alert = await anext(operator.messages)
        assert alert.payload == b'{"state":"firing"}'
        got: list[tuple[str, bytes]] = []
        async with asyncio.timeout(30):
            while len(got) < n:
                delivery = await inbox.take(0.01)  # resumes the reader below half
                got += delivery.messages
                reader.ack(delivery.acks)
    assert sorted(seqs(got)) == list(range(n))
    await forget_session(stack, cfg.client_id)
