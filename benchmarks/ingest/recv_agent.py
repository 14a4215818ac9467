"""The Sentinel agent as deployed: `sentinel run` in its own process, with every stream
detector of deploy/eval.toml, storing to the stack's InfluxDB and alerting to its
Alertmanager.

The configuration is a copy of eval.toml; the run's own settings come from the documented
`SENTINEL_<SECTION>__<KEY>` overrides: a fresh client id (its own persistent session), the
run's topic root, a fresh database, free HTTP port, secrets as files (never in argv or env),
the MQTT reader under test (`[mqtt] client`: "paho" or "native"), and an on-disk spool of
its own, as the shipped deploy/sentinel.toml has. Before stopping it, the receiver waits for
the spool to drain, and reports how long that took: the run's figures count a message once
it is durable (stored or spooled), and InfluxDB's count at the end shows all were stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Literal

import aiohttp
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.ingest import procstat
from benchmarks.ingest.receiver import BrokerLog
from benchmarks.ingest.stack import REPO, BenchError, Stack, free_port
from sentinel.topics import TopicPattern

EVAL_CONFIG = REPO / "deploy" / "eval.toml"
USER = "sentinel-agent"
DRAIN_LIMIT_S = 600.0


def metric_sum(text: str, sample: str, **labels: str) -> float:
    """Sum of the samples named `sample` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def topic_template(root: str, leaf: str) -> str:
    return f"{root}/{{tenant}}/{{zone}}/{{kind}}/{{device_id}}/{leaf}"


def forget_session(stack: Stack, client_id: str) -> None:
    """Connect once with a clean session under the agent's id: the broker drops the
    persistent session (and any queue) the run left behind."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True,
        protocol=mqtt.MQTTv311,
    )  # fmt: skip
    client.username_pw_set(USER, stack.secret("mqtt-agent"))
    client.connect(stack.mqtt_host, stack.mqtt_port, keepalive=10)
    client.loop_start()
    client.disconnect()
    client.loop_stop()


def agent_name(client: str) -> str:
    """The receiver's name in the table: which MQTT reader the agent ran with."""
    return f"sentinel agent ({client})"


class AgentReceiver:
    def __init__(
        self,
        stack: Stack,
        workdir: Path,
        telemetry_fields: dict[str, str],
        profile_out: Path | None = None,
        client: Literal["native", "paho"] = "paho",
    ) -> None:
        self.name = agent_name(client)
        self.client = client
        self.stack = stack
        self.workdir = workdir
        self.fields = telemetry_fields
        self.profile_out = profile_out
        self.client_id = f"bench-agent-{uuid.uuid4().hex[:8]}"
        self.port = 0
        self.db = ""
        self.log = workdir / f"{self.client_id}.log"
        self._proc: asyncio.subprocess.Process | None = None

    def _env(self, root: str) -> dict[str, str]:
        s = self.stack
        return {
            **os.environ,
            "SENTINEL_MQTT__URL": s.mqtt_url,
            "SENTINEL_MQTT__CLIENT_ID": self.client_id,
            "SENTINEL_MQTT__CLIENT": self.client,
            "SENTINEL_MQTT__USERNAME": USER,
            "SENTINEL_MQTT__PASSWORD_FILE": str(s.secret_file("mqtt-agent")),
            "SENTINEL_MQTT__TELEMETRY_TOPIC": topic_template(root, "telemetry"),
            "SENTINEL_MQTT__STATUS_TOPIC": topic_template(root, "status"),
            "SENTINEL_INFLUXDB__URL": s.influx_url,
            "SENTINEL_INFLUXDB__DATABASE": self.db,
            "SENTINEL_INFLUXDB__USERNAME": s.influx_user,
            "SENTINEL_INFLUXDB__PASSWORD_FILE": str(s.secret_file("influx-agent")),
            "SENTINEL_ALERTMANAGER__URL": s.am_url,
            "SENTINEL_INFLUXDB__SPOOL_DIR": str(self.workdir / f"spool-{self.client_id}"),
            "SENTINEL_HTTP__LISTEN": f"127.0.0.1:{self.port}",
        }

    async def start(self, root: str) -> None:
        self.port = free_port()  # as late as possible: other tests take ports too
        self.db = await self.stack.create_database("bench_ingest")
        config = self.workdir / "agent.toml"
        shutil.copyfile(EVAL_CONFIG, config)
        command = [sys.executable, "-m", "sentinel.cli", "run", "--config", str(config)]
        if self.profile_out is not None:
            command[1:1] = ["-m", "cProfile", "-o", str(self.profile_out)]
        log = BrokerLog(self.stack.mosquitto_log)
        with self.log.open("ab") as err:
            self._proc = await asyncio.create_subprocess_exec(
                *command, stderr=err, env=self._env(root), cwd=REPO
            )
        subscription = TopicPattern.parse(topic_template(root, "telemetry")).subscription
        await log.wait_subscribed(self.client_id, subscription, self._proc)

    def pids(self) -> list[int]:
        assert self._proc is not None
        return [self._proc.pid]

    async def _metrics(self) -> str:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(f"http://127.0.0.1:{self.port}/metrics") as resp,
        ):
            return await resp.text()

    async def received(self) -> int:
        text = await self._metrics()
        return round(metric_sum(text, "sentinel_messages_received_total", source="mqtt"))

    async def details(self) -> dict[str, float]:
        text = await self._metrics()
        assert self._proc is not None
        return {
            "accepted": metric_sum(text, "sentinel_records_accepted_total"),
            "rejected": metric_sum(text, "sentinel_rejects_total"),
            "alerts": metric_sum(text, "sentinel_alerts_total"),
            "points_written": metric_sum(text, "sentinel_influx_points_written_total"),
            "spooled_points": metric_sum(text, "sentinel_spooled_points_total"),
            "tracked_devices": metric_sum(text, "sentinel_tracked_devices"),
            "rss_bytes": procstat.rss_bytes(self._proc.pid),
        }

    async def _wait_drained(self) -> float:
        """Seconds until the agent holds no point for InfluxDB, in memory or spooled."""
        began = time.monotonic()
        while time.monotonic() - began < DRAIN_LIMIT_S:
            text = await self._metrics()
            held = metric_sum(text, "sentinel_spool_bytes") + metric_sum(
                text, "sentinel_queue_depth", queue="influx"
            )
            if not held:
                break
            await asyncio.sleep(0.5)
        return time.monotonic() - began

    async def stop(self) -> dict[str, float]:
        """Wait for the spool to drain, SIGTERM (an orderly stop: it writes what it holds),
        then count what InfluxDB has."""
        out: dict[str, float] = {}
        if self._proc is not None and self._proc.returncode is None:
            # Not serving: stop it anyway, InfluxDB's count will tell.
            with contextlib.suppress(aiohttp.ClientError):
                out["drain_s"] = await self._wait_drained()
            self._proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._proc.wait(), 60)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
            if self._proc.returncode != 0:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise BenchError(f"the agent exited with {self._proc.returncode}: {tail}")
        if self.db:
            out["influx_points"] = await self.stack.count_points(self.db, self.fields)
            await self.stack.drop_database(self.db)
            self.db = ""
        await asyncio.to_thread(forget_session, self.stack, self.client_id)
        return out
