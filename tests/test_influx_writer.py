"""The InfluxDB writer against a scripted HTTP server that answers /write slowly.

The real InfluxDB's stalls are in tests/test_stack_influx_stall.py; this server makes the
writer's races repeatable: lines put while a batch is on its way, spills in between.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from sentinel.config import InfluxConfig
from sentinel.metrics import Metrics
from sentinel.store.influx import InfluxHttp, InfluxWriter
from sentinel.store.spool import Spool


class SlowInflux:
    """Answers every /write with 204 after `delay_s`, keeping the lines it got."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.lines: list[str] = []

    async def write(self, request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        await asyncio.sleep(self.delay_s)
        self.lines += body.split("\n")
        return web.Response(status=204)


@asynccontextmanager
async def serving(server: SlowInflux) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/write", server.write)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


BATCH = 300  # lines per write
PER_PUT, EVERY_S = 60, 0.02  # the stream: ~3,000 lines/s
LAG_S = 0.2


def points(start: int, n: int) -> list[str]:
    return [f"m,device_id=d{i % 7} v={i} {1_700_000_000_000 + i}" for i in range(start, start + n)]


@dataclass
class Run:
    server: SlowInflux
    spooled: float  # points that went through the spool
    put: list[str]  # every line put, in order
    durable: list[int]  # the durable position seen after each put
    stream_s: float  # how long putting took (longer on a loaded machine)


async def stream_through(
    writer: InfluxWriter, batches: int, per_batch: int, every_s: float
) -> tuple[list[str], list[int]]:
    """Put `batches` of lines at a steady pace; the durable position seen after each put."""
    put: list[str] = []
    durable: list[int] = []
    for b in range(batches):
        lines = points(b * per_batch, per_batch)
        await writer.put(lines)
        put += lines
        durable.append(writer.durable)
        await asyncio.sleep(every_s)
    return put, durable


async def drained(
    writer: InfluxWriter, spool: Spool | None, task: asyncio.Task[None], within_s: float = 30
) -> None:
    """Until memory and spool are empty (the writer has no event for that); a writer that
    died raises its error here."""
    deadline = time.monotonic() + within_s
    while writer.pending or spool:
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "the writer did not drain"
        await asyncio.sleep(0.05)


async def run_writer(tmp_path: Path, delay_s: float, spool: bool, batches: int = 40) -> Run:
    server = SlowInflux(delay_s)
    async with serving(server) as url, aiohttp.ClientSession() as session:
        cfg = InfluxConfig(
            url=url,
            username=None,
            batch_size=BATCH,
            flush_interval_s=0.05,
            spool_dir=tmp_path / "spool" if spool else None,
            spool_lag_s=LAG_S,
        )
        metrics = Metrics()
        disk = Spool(cfg.spool_dir, cfg.spool_max_bytes) if cfg.spool_dir else None
        writer = InfluxWriter(InfluxHttp(session, cfg), cfg, metrics, disk)
        task = asyncio.create_task(writer.run())
        began = time.monotonic()
        put, durable = await stream_through(writer, batches, PER_PUT, EVERY_S)
        stream_s = time.monotonic() - began
        await asyncio.wait_for(writer.wait_durable(writer.position), 30)
        await drained(writer, disk, task)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    spooled = metrics.registry.get_sample_value("sentinel_spooled_points_total") or 0.0
    return Run(server, spooled, put, durable, stream_s)


async def test_a_slow_influxdb_sends_lines_to_the_spool_and_acks_go_on(tmp_path: Path) -> None:
    # Each write takes 0.4 s: InfluxDB takes 750 lines/s of a 3,000 lines/s stream.
    run = await run_writer(tmp_path, delay_s=0.4, spool=True)
    stored = Counter(run.server.lines)
    assert set(stored) == set(run.put)  # every line stored
    # ... once, but for the batch that was out when the spooling began: spooled too, it may
    # be written twice (the same points: InfluxDB keeps one).
    assert stored.total() - len(run.put) <= BATCH
    assert run.spooled > len(run.put) / 2  # the disk, not InfluxDB, set the pace of durability
    # At the end of the stream, only the last lag's worth of puts may wait in memory.
    assert len(run.put) == 40 * PER_PUT
    assert run.durable[-1] >= len(run.put) - PER_PUT * (LAG_S / EVERY_S + 2)


async def test_without_a_spool_durability_follows_influxdb(tmp_path: Path) -> None:
    run = await run_writer(tmp_path, delay_s=0.4, spool=False)
    assert Counter(run.server.lines) == Counter(run.put)
    # At most one write per 0.4 s had finished when the stream ended, far from all of it.
    writes_done = int(run.stream_s / 0.4) + 1
    assert run.durable[-1] <= writes_done * BATCH
    assert run.durable[-1] < len(run.put)


async def test_a_quick_influxdb_needs_no_spool(tmp_path: Path) -> None:
    run = await run_writer(tmp_path, delay_s=0.0, spool=True, batches=20)
    assert Counter(run.server.lines) == Counter(run.put)
    assert run.spooled == 0
