"""Fixtures for tests against the real local stack (deploy/local/stack up)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from sentinel.agent import Agent
from sentinel.config import Config
from sentinel.metrics import Metrics
from sentinel.store.influx import basic_auth_header
from tests.stack_env import require_stack, secret


@dataclass(frozen=True)
class Stack:
    env: dict[str, str]

    @property
    def mqtt_url(self) -> str:
        return self.env["STACK_MQTT_URL"]

    @property
    def influx_url(self) -> str:
        return self.env["STACK_INFLUX_URL"]

    @property
    def am_url(self) -> str:
        return self.env["STACK_AM_URL"]

    @property
    def prom_url(self) -> str:
        return self.env["STACK_PROM_URL"]

    @property
    def agent_port(self) -> int:
        return int(self.env["STACK_AGENT_PORT"])


@pytest.fixture
def stack() -> Stack:
    return Stack(require_stack())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def influxql(stack: Stack, query: str, db: str = "") -> dict[str, Any]:
    """Run InfluxQL as the stack's admin (tests create and drop their own databases)."""
    auth = basic_auth_header(stack.env["STACK_INFLUX_ADMIN_USER"], secret("influx-admin"))
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{stack.influx_url}/query", data={"q": query, "db": db, "epoch": "ms"}, headers=auth
        ) as resp,
    ):
        body: dict[str, Any] = await resp.json(content_type=None)
        assert resp.status == 200, body
        return body


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten an InfluxQL answer into dicts, tags (from GROUP BY *) merged into each row."""
    out = []
    for res in result.get("results", []):
        for series in res.get("series", []):
            for values in series["values"]:
                row = dict(zip(series["columns"], values, strict=True))
                row.update(series.get("tags", {}))
                out.append(row)
    return out


async def poll_rows(
    stack: Stack,
    db: str,
    query: str,
    done: Callable[[list[dict[str, Any]]], bool],
    within_s: float = 15.0,
) -> list[dict[str, Any]]:
    """Re-run `query` until `done(rows)` or the time is up; return the last rows."""
    deadline = time.monotonic() + within_s
    while True:
        found = rows(await influxql(stack, query, db))
        if done(found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


@pytest.fixture
async def influx_db(stack: Stack) -> AsyncIterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    await influxql(stack, f'CREATE DATABASE "{name}"')
    await influxql(stack, f'GRANT ALL ON "{name}" TO "{stack.env["STACK_INFLUX_USER"]}"')
    yield name
    await influxql(stack, f'DROP DATABASE "{name}"')


@dataclass
class FleetTopics:
    """A unique topic root for one test, under the ACL's fleet/#."""

    root: str

    def telemetry(self, tenant: str, zone: str, kind: str, device: str) -> str:
        return f"{self.root}/{tenant}/{zone}/{kind}/{device}/telemetry"


@pytest.fixture
def fleet() -> FleetTopics:
    return FleetTopics(f"fleet/test-{uuid.uuid4().hex[:10]}")


def agent_config(
    stack: Stack,
    db: str,
    root: str,
    *,
    http_port: int | None = None,
    detectors: list[dict[str, Any]] | None = None,
    **sections: dict[str, Any],
) -> Config:
    data: dict[str, Any] = {
        "mqtt": {
            "url": stack.mqtt_url,
            "client_id": f"agent-{uuid.uuid4().hex[:10]}",
            "password": secret("mqtt-agent"),
            "telemetry_topic": root + "/{tenant}/{zone}/{kind}/{device_id}/telemetry",
            "status_topic": root + "/{tenant}/{zone}/{kind}/{device_id}/status",
        },
        "influxdb": {
            "url": stack.influx_url,
            "database": db,
            "password": secret("influx-agent"),
            "flush_interval_s": 0.2,
        },
        "alertmanager": {"url": stack.am_url, "resend_interval_s": 2.0},
        "http": {"listen": f"127.0.0.1:{http_port or free_port()}"},
        "detectors": detectors or [],
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return Config(**data)


@contextlib.asynccontextmanager
async def running_agent(config: Config) -> AsyncIterator[Agent]:
    agent = Agent(config, Metrics())
    task = asyncio.create_task(agent.run(), name="agent-under-test")
    try:
        await asyncio.wait_for(agent.reader.connected.wait(), 15)
        yield agent
    finally:
        agent.request_stop()
        await asyncio.wait_for(task, 30)
