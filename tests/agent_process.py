"""The agent as a separate process, for tests that signal it or measure its memory."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.conftest import Stack, free_port
from tests.stack_env import secret


def write_config(
    path: Path,
    stack: Stack,
    db: str,
    root: str,
    client_id: str,
    *,
    http_port: int | None = None,
    extra: str = "",
    http_extra: str = "",
    alertmanager_url: str = "",
) -> None:
    """A minimal agent configuration; `extra` is TOML appended at the end, `http_extra`
    lines of the [http] section."""
    path.write_text(
        f"""
[mqtt]
url = "{stack.mqtt_url}"
client_id = "{client_id}"
telemetry_topic = "{root}/{{tenant}}/{{zone}}/{{kind}}/{{device_id}}/telemetry"
status_topic = "{root}/{{tenant}}/{{zone}}/{{kind}}/{{device_id}}/status"
[influxdb]
url = "{stack.influx_url}"
database = "{db}"
[alertmanager]
url = "{alertmanager_url}"
[http]
listen = "127.0.0.1:{http_port or free_port()}"
{http_extra}
{extra}
"""
    )


class AgentProcess:
    """`sentinel run` in a subprocess; its stderr is drained continuously into `log`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log: list[bytes] = []
        self._drain = asyncio.create_task(self._read())
        self.subscribed = asyncio.Event()

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.log.append(line)
            if b"mqtt_subscribed" in line:
                self.subscribed.set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    async def stop(self, how: signal.Signals = signal.SIGTERM) -> bytes:
        self.proc.send_signal(how)
        await asyncio.wait_for(self.proc.wait(), 30)
        await asyncio.wait_for(self._drain, 10)
        text = b"".join(self.log)
        expected = 0 if how == signal.SIGTERM else -how
        assert self.proc.returncode == expected, text.decode()[-2000:]
        return text


async def start_agent(config: Path) -> AgentProcess:
    env = {
        **os.environ,
        "SENTINEL_MQTT__PASSWORD": secret("mqtt-agent"),
        "SENTINEL_INFLUXDB__PASSWORD": secret("influx-agent"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sentinel.cli",
        "run",
        "--config",
        str(config),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    agent = AgentProcess(proc)
    try:
        await asyncio.wait_for(agent.subscribed.wait(), 20)
    except TimeoutError:
        proc.kill()
        raise AssertionError(
            "the agent did not subscribe: " + b"".join(agent.log).decode()
        ) from None
    return agent
