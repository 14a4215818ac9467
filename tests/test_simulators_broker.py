"""The simulator against the real local broker (deploy/local/stack up)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid

import aiomqtt
import pytest

from simulators.anomalies import AnomalySpec
from simulators.fleet import build_fleet
from simulators.generator import generate
from simulators.messages import Message
from simulators.publisher import PublishError, PublishStats, publish
from tests.stack_env import host_port, require_stack, secret

pytestmark = pytest.mark.stack


async def _collect(
    client: aiomqtt.Client, into: list[tuple[str, bytes]], expected: int, done: asyncio.Event
) -> None:
    async for m in client.messages:
        assert isinstance(m.payload, bytes)
        into.append((str(m.topic), m.payload))
        if len(into) >= expected:
            done.set()


async def test_simulated_fleet_reaches_the_broker_paced_and_complete() -> None:
    env = require_stack("mosquitto")
    url = env["STACK_MQTT_URL"]
    root = f"fleet/test-sim-{uuid.uuid4().hex[:10]}"
    fleet = build_fleet(100, seed=5)
    start = time.time() - 600
    anomaly = AnomalySpec(None, start_offset_s=60, duration_s=120)
    sent = list(generate(fleet, start, start + 600, [anomaly], 1, topic_prefix=root))
    status_topics = [m.topic for m in sent if m.retain]
    received: list[tuple[str, bytes]] = []
    progress: list[PublishStats] = []
    host, port = host_port(url)

    async with aiomqtt.Client(
        host,
        port,
        username=env["STACK_MQTT_AGENT_USER"],
        password=secret("mqtt-agent"),
        identifier=f"sim-test-reader-{uuid.uuid4().hex[:8]}",
    ) as reader:
        await reader.subscribe(f"{root}/#", qos=1)
        all_in = asyncio.Event()
        collector = asyncio.create_task(
            _collect(reader, received, len(sent), all_in), name="collector"
        )
        try:
            began = time.monotonic()
            stats = await publish(
                sent,
                mqtt_url=url,
                username=env["STACK_MQTT_SIM_USER"],
                password=secret("mqtt-sim"),
                client_id=f"sim-test-{uuid.uuid4().hex[:8]}",
                speed=300.0,  # 600 simulated seconds in 2 wall seconds
                on_progress=progress.append,
            )
            wall = time.monotonic() - began
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_in.wait(), 20)
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
            # Retained statuses would outlive the test on the persistent broker.
            await publish(
                [Message(0.0, t, b"", "-", 1, True) for t in status_topics],
                mqtt_url=url,
                username=env["STACK_MQTT_SIM_USER"],
                password=secret("mqtt-sim"),
                client_id=f"sim-test-clean-{uuid.uuid4().hex[:8]}",
                speed=math.inf,
            )

    assert stats.published == stats.acked == len(sent)
    assert stats.errors == 0
    assert stats.disconnects == 0
    assert 1.5 < wall < 15
    assert progress
    assert progress[-1].acked == len(sent)
    print(f"\n{len(sent)} messages published and acked in {stats.elapsed_s:.2f} s (paced)")
    # One connection, QoS 1: the broker delivers in publication order.
    assert received == [(m.topic, m.payload) for m in sent]


async def test_wrong_password_is_refused_without_leaking_it() -> None:
    env = require_stack("mosquitto")
    wrong = f"not-the-password-{uuid.uuid4().hex}"
    with pytest.raises(PublishError, match="refused") as err:
        await publish(
            [],
            mqtt_url=env["STACK_MQTT_URL"],
            username=env["STACK_MQTT_SIM_USER"],
            password=wrong,
            client_id=f"sim-test-{uuid.uuid4().hex[:8]}",
            speed=1.0,
        )
    assert wrong not in str(err.value)
