"""The running local stack (deploy/local/stack up): its URLs, secrets, and the few
InfluxDB admin calls the benchmark needs (a fresh database per run, counting points)."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from sentinel.store.influx import basic_auth_header

REPO = Path(__file__).resolve().parents[2]


class BenchError(Exception):
    """The benchmark cannot go on (stack down, a tool missing, a receiver that never starts)."""


def parse_env(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Stack:
    env: dict[str, str]

    @classmethod
    def load(cls) -> Stack:
        folder = Path(os.environ.get("STACK_DIR") or REPO / ".stack")
        try:
            env = parse_env((folder / "stack.env").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BenchError(
                f"no {folder}/stack.env: start the stack (deploy/local/stack up)"
            ) from None
        stack = cls(env)
        for url in (stack.mqtt_url, stack.influx_url, stack.am_url):
            parts = urlsplit(url)
            try:
                socket.create_connection((parts.hostname, parts.port), timeout=2).close()
            except OSError:
                raise BenchError(f"{url} does not answer: is the stack up?") from None
        return stack

    @property
    def mqtt_url(self) -> str:
        return self.env["STACK_MQTT_URL"]  # the plain listener

    @property
    def mqtt_host(self) -> str:
        return urlsplit(self.mqtt_url).hostname or "127.0.0.1"

    @property
    def mqtt_port(self) -> int:
        return urlsplit(self.mqtt_url).port or 1883

    @property
    def influx_url(self) -> str:
        return self.env["STACK_INFLUX_URL"]

    @property
    def am_url(self) -> str:
        return self.env["STACK_AM_URL"]

    @property
    def mosquitto_log(self) -> Path:
        return Path(self.env["STACK_DIR"]) / "logs" / "mosquitto.log"

    def secret_file(self, name: str) -> Path:
        folder = self.env.get("STACK_SECRETS_DIR") or str(Path(self.env["STACK_DIR"]) / "secrets")
        return Path(folder) / f"{name}.password"

    def secret(self, name: str) -> str:
        return self.secret_file(name).read_text(encoding="utf-8").strip()

    @property
    def influx_user(self) -> str:
        return self.env.get("STACK_INFLUX_USER", "sentinel-agent")

    async def influxql(self, query: str, db: str = "") -> dict[str, Any]:
        """InfluxQL as the stack's admin: the benchmark makes and drops its own databases."""
        auth = basic_auth_header(self.env["STACK_INFLUX_ADMIN_USER"], self.secret("influx-admin"))
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.influx_url}/query", data={"q": query, "db": db}, headers=auth
            ) as resp,
        ):
            body: dict[str, Any] = await resp.json(content_type=None)
        if resp.status != 200 or any("error" in r for r in body.get("results", [])):
            raise BenchError(f"InfluxQL {query!r} failed: {str(body)[:300]}")
        return body

    async def create_database(self, prefix: str) -> str:
        name = f"{prefix}_{int(time.time() * 1000) % 10**10}"
        await self.influxql(f'CREATE DATABASE "{name}"')
        await self.influxql(f'GRANT ALL ON "{name}" TO "{self.influx_user}"')
        return name

    async def drop_database(self, name: str) -> None:
        await self.influxql(f'DROP DATABASE "{name}"')

    async def count_points(self, db: str, fields: dict[str, str]) -> int:
        """Points stored: the count of one always-present field per measurement."""
        total = 0
        for measurement, field in fields.items():
            body = await self.influxql(f'SELECT count("{field}") FROM "{measurement}"', db)
            for result in body.get("results", []):
                for series in result.get("series", []):
                    total += sum(int(row[1]) for row in series["values"])
        return total
