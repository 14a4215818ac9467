"""Publishing from tests, as the simulator's MQTT user (the ACL lets it write fleet/#)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiomqtt

from tests.stack_env import host_port, secret


async def publish_all(
    mqtt_url: str, messages: Sequence[tuple[str, bytes]], *, window: int = 200
) -> None:
    """QoS 1 publish of every message, in order, up to `window` in flight; returns when acked."""
    host, port = host_port(mqtt_url)
    async with aiomqtt.Client(
        host,
        port,
        username="sentinel-sim",
        password=secret("mqtt-sim"),
        max_inflight_messages=window,
    ) as client:
        for start in range(0, len(messages), window):
            chunk = messages[start : start + window]
            await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in chunk))
