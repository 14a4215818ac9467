"""What every receiver offers the measurement, and the broker-log check that it subscribed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Protocol

from benchmarks.ingest.stack import BenchError


class Receiver(Protocol):
    name: str

    async def start(self, root: str) -> None:
        """Start, and return once the broker has its subscription to `root`."""

    def pids(self) -> list[int]:
        """The processes whose CPU is the receiver's cost."""

    async def received(self) -> int:
        """Messages it got (read after it has gone quiet, outside the measured CPU)."""

    async def details(self) -> dict[str, float]:
        """Receiver-specific figures (stored points, RSS, alerts), before `stop`."""

    async def stop(self) -> dict[str, float]:
        """Stop and clean up; figures only known after the stop."""


def subscribed_line(line: str, client_id: str, topic_filter: str) -> bool:
    """Mosquitto (log_type subscribe) logs `<time>: <client id> <qos> <filter>` per SUBSCRIBE."""
    parts = line.rstrip("\n").split(" ")
    return (
        len(parts) == 4
        and parts[1] == client_id
        and parts[2] in ("0", "1", "2")
        and parts[3] == topic_filter
    )


class BrokerLog:
    """Follows the stack's Mosquitto log from now on, to see a client's subscription."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size

    async def wait_subscribed(
        self,
        client_id: str,
        topic_filter: str,
        proc: asyncio.subprocess.Process | None = None,
        timeout_s: float = 20.0,
    ) -> None:
        deadline = time.monotonic() + timeout_s
        pending = ""
        while time.monotonic() < deadline:
            with self.path.open("r", encoding="utf-8", errors="replace") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
                self.offset = fh.tell()
            pending += chunk
            *lines, pending = pending.split("\n")
            if any(subscribed_line(line, client_id, topic_filter) for line in lines):
                return
            if proc is not None and proc.returncode is not None:
                raise BenchError(f"{client_id} exited with {proc.returncode} before subscribing")
            await asyncio.sleep(0.05)
        raise BenchError(f"{client_id} did not subscribe to {topic_filter} in {timeout_s} s")
