"""One receiver on one stream: CPU per message, throughput, loss.

The receiver starts and subscribes; its CPU is read; the stream is published (with, for the
agent, the anomalies of `latency` on the side); the receiver's CPU is then sampled until it
has stayed quiet for QUIET_S. Its cost is the CPU it used in between; its throughput the
messages it received from the first publish until the later of the publisher's end and its
own last busy sample (a receiver that keeps up ends with the publisher; one that lags, when
it has drained its backlog). Counts are read only after that: a scrape costs CPU too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

from benchmarks.ingest import procstat
from benchmarks.ingest.receiver import Receiver
from benchmarks.ingest.stack import BenchError, Stack
from benchmarks.ingest.stream import publish_stream, under_root
from simulators.messages import Message

SAMPLE_S = 0.1
QUIET_S = 1.0
# Idle work (timers, the agent's 50 ms batch linger) stays below this over QUIET_S.
QUIET_CPU_S = 0.05
# One sample "busy" when the receiver used this much CPU in it (20 % of a core).
BUSY_CPU_S = 0.02
GIVE_UP_S = 180.0

SideTask = Callable[[str, asyncio.Event], Awaitable[int]]


@dataclass
class RunResult:
    receiver: str
    rate: float | None  # messages per second offered; None: as fast as the publisher goes
    expected: int
    received: int
    cpu_s: float
    wall_s: float
    published: int
    publish_s: float
    details: dict[str, float] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.expected - self.received

    @property
    def cpu_us_per_msg(self) -> float | None:
        return self.cpu_s / self.received * 1e6 if self.received else None

    @property
    def msgs_per_s(self) -> float | None:
        return self.received / self.wall_s if self.wall_s > 0 else None

    def to_json(self) -> dict[str, object]:
        return {
            **asdict(self),
            "lost": self.lost,
            "cpu_us_per_msg": self.cpu_us_per_msg,
            "msgs_per_s": self.msgs_per_s,
        }


def finished_at(published_at: float, last_busy: float | None) -> float:
    """When the receiver had the whole stream: not before the last message was sent."""
    return published_at if last_busy is None else max(published_at, last_busy)


async def _until_quiet(pids: list[int], trace: procstat.CpuTrace, done: asyncio.Event) -> None:
    """Sample CPU until everything is published and the receiver has gone quiet."""
    while True:
        procstat.sample(trace, pids)
        now = time.monotonic()
        if done.is_set() and trace.quiet_for(now, QUIET_S, QUIET_CPU_S):
            return
        if now - trace.samples[0][0] > GIVE_UP_S:
            return
        await asyncio.sleep(SAMPLE_S)


async def run(
    receiver: Receiver,
    stack: Stack,
    messages: list[tuple[str, bytes]],
    rate: float | None,
    side: SideTask | None = None,
) -> RunResult:
    """Publish `messages` once to `receiver` under a fresh root; `side(root, started)` runs
    beside the publisher and returns how many extra messages it published."""
    root = f"fleet/bench-{uuid.uuid4().hex[:10]}"
    paced: list[Message] = under_root(messages, root, rate)
    try:
        await receiver.start(root)
        pids = receiver.pids()
        trace = procstat.CpuTrace()
        cpu0 = procstat.sample(trace, pids)
        done, started = asyncio.Event(), asyncio.Event()
        watcher = asyncio.create_task(_until_quiet(pids, trace, done))
        t0 = time.monotonic()
        started.set()
        extra = side(root, started) if side is not None else None
        side_task = asyncio.ensure_future(extra) if extra is not None else None
        stats = await publish_stream(
            paced, stack.mqtt_url, stack.secret("mqtt-sim"), f"bench-pub-{root[-10:]}", rate
        )
        publish_s = time.monotonic() - t0
        extra_messages = await side_task if side_task is not None else 0
        done.set()
        try:
            await watcher
        except FileNotFoundError:  # its /proc entry is gone
            raise BenchError(f"{receiver.name} exited during the run") from None
        t_end = finished_at(t0 + publish_s, trace.last_busy(BUSY_CPU_S))
        cpu1 = trace.samples[-1][1]
        received = await receiver.received()
        details = await receiver.details()
    finally:
        details_after = await receiver.stop()
    return RunResult(
        receiver=receiver.name,
        rate=rate,
        expected=len(messages) + extra_messages,
        received=received,
        cpu_s=cpu1 - cpu0,
        wall_s=t_end - t0,
        published=stats.acked + extra_messages,
        publish_s=publish_s,
        details={**details, **details_after},
    )
