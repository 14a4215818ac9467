"""`mosquitto_sub` (C): the floor. Its output goes to `wc -l`; one payload is one line."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

from benchmarks.ingest.receiver import BrokerLog
from benchmarks.ingest.stack import BenchError, Stack

USER = "sentinel-operator"  # the ACL lets it read fleet/#


def count_lines(wc_output: bytes) -> int:
    return int(wc_output.split()[0])


class MosquittoSub:
    name = "mosquitto_sub"

    def __init__(self, stack: Stack, workdir: Path) -> None:
        if shutil.which("mosquitto_sub") is None:
            raise BenchError("mosquitto_sub not found (Debian package mosquitto-clients)")
        self.stack = stack
        self.workdir = workdir
        self._sub: asyncio.subprocess.Process | None = None
        self._wc: asyncio.subprocess.Process | None = None
        self._count: int | None = None

    def _options_dir(self) -> Path:
        """mosquitto_sub reads default options from $XDG_CONFIG_HOME/mosquitto_sub: the
        password goes there, never on a command line that `ps` shows."""
        folder = self.workdir / "xdg"
        folder.mkdir(mode=0o700, exist_ok=True)
        options = folder / "mosquitto_sub"
        options.touch(mode=0o600)
        options.write_text(f"-u {USER}\n-P {self.stack.secret('mqtt-operator')}\n")
        return folder

    async def start(self, root: str) -> None:
        client_id = f"bench-sub-{uuid.uuid4().hex[:8]}"
        topic = f"{root}/#"
        log = BrokerLog(self.stack.mosquitto_log)
        env = {**os.environ, "XDG_CONFIG_HOME": str(self._options_dir())}
        read_end, write_end = os.pipe()
        try:
            self._wc = await asyncio.create_subprocess_exec(
                "wc", "-l", stdin=read_end, stdout=asyncio.subprocess.PIPE
            )
            self._sub = await asyncio.create_subprocess_exec(
                "mosquitto_sub",
                "-h", self.stack.mqtt_host,
                "-p", str(self.stack.mqtt_port),
                "-i", client_id,
                "-q", "1",
                "-t", topic,
                stdout=write_end,
                env=env,
            )  # fmt: skip
        finally:
            os.close(read_end)  # the children hold the pipe's ends now
            os.close(write_end)
        await log.wait_subscribed(client_id, topic, self._sub)

    def pids(self) -> list[int]:
        assert self._sub is not None
        return [self._sub.pid]

    async def received(self) -> int:
        # wc prints its count at EOF: stop mosquitto_sub (already quiet, its CPU is read).
        if self._count is None:
            assert self._sub is not None
            assert self._wc is not None
            self._sub.terminate()
            await self._sub.wait()
            out, _ = await asyncio.wait_for(self._wc.communicate(), 30)
            self._count = count_lines(out)
        return self._count

    async def details(self) -> dict[str, float]:
        return {}

    async def stop(self) -> dict[str, float]:
        for proc in (self._sub, self._wc):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
        return {}
