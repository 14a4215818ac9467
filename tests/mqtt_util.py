"""Publishing from tests, as the simulator's MQTT user (the ACL lets it write fleet/#)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Literal

import aiomqtt

from tests.stack_env import host_port, secret


def client_as(
    mqtt_url: str, user: Literal["sim", "agent", "operator"], **options: Any
) -> aiomqtt.Client:
    """An aiomqtt client logged in as the stack's `sentinel-<user>` (its password file)."""
    host, port = host_port(mqtt_url)
    return aiomqtt.Client(
        host, port, username=f"sentinel-{user}", password=secret(f"mqtt-{user}"), **options
    )


async def publish_all(
    mqtt_url: str, messages: Sequence[tuple[str, bytes]], *, window: int = 200
) -> None:
    """QoS 1 publish of every message, in order, up to `window` in flight; returns when acked."""
    async with client_as(mqtt_url, "sim", max_inflight_messages=window) as client:
        for start in range(0, len(messages), window):
            chunk = messages[start : start + window]
            await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in chunk))


async def publish_paced(
    mqtt_url: str, messages: Sequence[tuple[str, bytes]], rate: int, tick_s: float = 0.1
) -> None:
    """QoS 1 publish at `rate` messages per second, a tick's worth at a time."""
    per_tick = max(1, round(rate * tick_s))
    async with client_as(mqtt_url, "sim", max_inflight_messages=per_tick) as client:
        started = time.monotonic()
        for n, start in enumerate(range(0, len(messages), per_tick)):
            chunk = messages[start : start + per_tick]
            await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in chunk))
            await asyncio.sleep(max(0.0, started + (n + 1) * tick_s - time.monotonic()))
