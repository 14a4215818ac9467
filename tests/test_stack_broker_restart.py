"""Mosquitto restarted mid-stream: every message the publisher got acknowledged is stored."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import (
    FleetTopics,
    Stack,
    agent_config,
    influxql,
    poll_rows,
    rows,
    running_agent,
)
from tests.stack_env import host_port, secret, start_stack, stop_service

pytestmark = pytest.mark.stack


class TrackingPublisher:
    """A paho publisher with a persistent session that records which messages the broker
    acknowledged (PUBACK); paho resends the unacknowledged ones after a reconnect."""

    def __init__(self, stack: Stack, messages: list[tuple[str, bytes]]) -> None:
        self.messages = messages
        self.acked: set[int] = set()
        self._mids: dict[int, int] = {}
        self._acked_mids: list[int] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"pub-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )
        self.client.username_pw_set("sentinel-sim", secret("mqtt-sim"))
        self.client.on_publish = self._on_publish
        self.client.reconnect_delay_set(1, 2)
        self.host, self.port = host_port(stack.mqtt_url)

    def _on_publish(self, _c: object, _u: object, mid: int, _rc: object, _p: object) -> None:
        with self._lock:
            self._acked_mids.append(mid)

    def run(self, rate: float) -> None:
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        started = time.monotonic()
        for seq, (topic, payload) in enumerate(self.messages):
            info = self.client.publish(topic, payload, qos=1)  # queued while disconnected
            with self._lock:
                self._mids[info.mid] = seq
            time.sleep(max(0.0, started + seq / rate - time.monotonic()))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(self._acked_mids) < len(self.messages):
            time.sleep(0.1)
        self.client.loop_stop()
        self.client.disconnect()
        with self._lock:
            self.acked = {self._mids[m] for m in self._acked_mids}


async def test_broker_restart_midstream_loses_nothing_acknowledged(
    stack: Stack, influx_db: str, fleet: FleetTopics
) -> None:
    total, rate = 12_000, 1500.0
    now = time.time()
    messages = [
        (
            fleet.telemetry("venissieux", "parilly", "lighting", f"ven-lum-{i % 300:05d}"),
            orjson.dumps({"ts": now - 3600 + i * 0.1, "seq": i, "metrics": {"lux": i % 50}}),
        )
        for i in range(total)
    ]
    cfg = agent_config(stack, influx_db, fleet.root)
    publisher = TrackingPublisher(stack, messages)
    async with running_agent(cfg) as agent:
        publishing = asyncio.create_task(asyncio.to_thread(publisher.run, rate))
        await asyncio.sleep(3)
        await asyncio.to_thread(stop_service, "mosquitto")
        await asyncio.sleep(2)
        await asyncio.to_thread(start_stack)
        await publishing
        query = 'SELECT count("lux") FROM "lighting"'
        await poll_rows(
            stack,
            influx_db,
            query,
            lambda r: bool(r) and r[0]["count"] >= len(publisher.acked),
            within_s=60,
        )
        reconnects = agent.metrics.registry.get_sample_value("sentinel_mqtt_reconnects_total")
    stored = rows(await influxql(stack, 'SELECT "seq" FROM "lighting"', influx_db))
    stored_seqs = {int(r["seq"]) for r in stored}
    print(f"acked by the broker: {len(publisher.acked)}, stored: {len(stored_seqs)}")
    assert reconnects
    assert reconnects >= 1
    assert len(publisher.acked) > total * 0.9
    assert publisher.acked - stored_seqs == set()
