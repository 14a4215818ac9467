"""`prometheus-mqtt-exporter` (mqtt2prometheus, Go, Debian package): parses each JSON
payload and sets one gauge per configured metric.

Configured for the stream's fields: every name under the payload's `metrics` object, read
with a nested path (`metrics.upload_kbps`: the exporter reads `mqtt_name` as a gojsonq path
split on `json_parsing.separator`, so nested keys work), the device id taken from the topic.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.ingest.receiver import BrokerLog
from benchmarks.ingest.stack import BenchError, Stack, free_port

BINARY = "prometheus-mqtt-exporter"
PACKAGE = "prometheus-mqtt-exporter"
USER = "sentinel-operator"  # the ACL lets it read fleet/#; never running beside mosquitto_sub


def ensure_installed() -> str:
    """The Debian package, installed when missing and we are root with apt (as scripts/test
    installs tcpdump); returns the binary's path."""
    found = shutil.which(BINARY)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BenchError(f"{BINARY} missing: apt-get install {PACKAGE} (as root)")
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", PACKAGE],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        stdout=subprocess.DEVNULL,
    )
    found = shutil.which(BINARY)
    if not found:
        raise BenchError(f"apt-get installed {PACKAGE} but {BINARY} is not on PATH")
    return found


def exporter_config(
    root: str, client_id: str, mqtt_url: str, metric_names: Iterable[str]
) -> dict[str, object]:
    """mqtt2prometheus's YAML configuration, as JSON (which YAML reads as is)."""
    return {
        "mqtt": {
            "server": mqtt_url.replace("mqtt://", "tcp://", 1),
            "client_id": client_id,
            "topic_path": f"{root}/#",
            "device_id_regex": f"{re.escape(root)}/[^/]+/[^/]+/[^/]+/(?P<deviceid>[^/]+)/.*",
            "qos": 1,
        },
        "cache": {"timeout": "24h"},
        "json_parsing": {"separator": "."},
        "metrics": [
            {"prom_name": name, "mqtt_name": f"metrics.{name}", "help": name, "type": "gauge"}
            for name in sorted(metric_names)
        ],
    }


def received_by_status(metrics_text: str) -> dict[str, float]:
    """`received_messages{status=...,topic=...}` summed per status (one series per topic)."""
    wanted = "\n".join(
        line for line in metrics_text.splitlines() if line.startswith("received_messages")
    )
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(wanted + "\n"):
        for s in family.samples:
            status = s.labels.get("status", "")
            out[status] = out.get(status, 0.0) + s.value
    return out


class Exporter:
    name = "prometheus-mqtt-exporter"

    def __init__(self, stack: Stack, workdir: Path, metric_names: Iterable[str]) -> None:
        self.binary = ensure_installed()
        self.stack = stack
        self.workdir = workdir
        self.metric_names = sorted(metric_names)
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._by_status: dict[str, float] | None = None

    async def start(self, root: str) -> None:
        client_id = f"bench-exporter-{uuid.uuid4().hex[:8]}"
        self.port = free_port()  # as late as possible: other tests take ports too
        config = self.workdir / "mqtt-exporter.yaml"
        config.write_text(
            json.dumps(exporter_config(root, client_id, self.stack.mqtt_url, self.metric_names))
        )
        # -treat-mqtt-password-as-file-name: the variable names a file, not the secret.
        password = self.workdir / "mqtt-exporter.password"
        password.touch(mode=0o600)
        password.write_text(self.stack.secret("mqtt-operator"))
        env = {**os.environ, "MQTT2PROM_MQTT_USER": USER, "MQTT2PROM_MQTT_PASSWORD": str(password)}
        log = BrokerLog(self.stack.mosquitto_log)
        with (self.workdir / "mqtt-exporter.log").open("ab") as err:
            self._proc = await asyncio.create_subprocess_exec(
                self.binary,
                "-config", str(config),
                "-listen-address", "127.0.0.1",
                "-listen-port", str(self.port),
                "-log-level", "warn",
                "-treat-mqtt-password-as-file-name",
                stderr=err,
                stdout=err,
                env=env,
            )  # fmt: skip
        await log.wait_subscribed(client_id, f"{root}/#", self._proc)
        await self._wait_http()

    async def _wait_http(self) -> None:
        """It subscribes before it listens: a port taken meanwhile makes it exit then."""
        assert self._proc is not None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            for _ in range(100):
                if self._proc.returncode is not None:
                    break
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/metrics") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        log = (self.workdir / "mqtt-exporter.log").read_text(errors="replace")[-1000:]
        raise BenchError(f"{BINARY} is not serving /metrics on port {self.port}: {log}")

    def pids(self) -> list[int]:
        assert self._proc is not None
        return [self._proc.pid]

    async def _scrape(self) -> dict[str, float]:
        if self._by_status is None:
            timeout = aiohttp.ClientTimeout(total=60)
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(f"http://127.0.0.1:{self.port}/metrics") as resp,
            ):
                self._by_status = received_by_status(await resp.text())
        return self._by_status

    async def received(self) -> int:
        return round(sum((await self._scrape()).values()))

    async def details(self) -> dict[str, float]:
        by_status = await self._scrape()
        return {"not_success": sum(v for k, v in by_status.items() if k != "success")}

    async def stop(self) -> dict[str, float]:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 10)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        self._by_status = None
        return {}
