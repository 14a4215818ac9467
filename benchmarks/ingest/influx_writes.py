"""InfluxDB writes: the agent's InfluxWriter against curl POSTing the same line protocol.

Same points, same batch size (the config's `influxdb.batch_size`), same server, same fresh
database, one request at a time on one connection for both. Each pass shifts the points'
timestamps by a millisecond so that every pass writes new points; a first, unreported pass
creates the series (the costly part of a first write in InfluxDB 1.x). The number of points is
a whole number of batches, so that the writer never waits for its flush timer.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from benchmarks.ingest.stack import BenchError, Stack
from sentinel.config import InfluxConfig
from sentinel.metrics import Metrics
from sentinel.store.influx import InfluxHttp, InfluxWriter

PASSES = 2


def shift_lines(lines: list[str], ms: int) -> list[str]:
    """The same points `ms` milliseconds later (the timestamp is the last field)."""
    out = []
    for line in lines:
        head, _, ts = line.rpartition(" ")
        out.append(f"{head} {int(ts) + ms}")
    return out


def whole_batches(lines: list[str], batch: int) -> list[str]:
    return lines[: len(lines) // batch * batch]


def curl_config(url: str, user: str, password: str, files: list[Path]) -> str:
    """One curl invocation, one request per batch file (`next`), credentials off argv."""
    blocks = [
        f'user = "{user}:{password}"\nurl = "{url}"\ndata-binary = "@{f}"\n'
        f'output = "/dev/null"\nwrite-out = "%{{http_code}}\\n"\n'
        for f in files
    ]
    return "next\n".join(blocks)


@dataclass
class WriteResult:
    writer: str
    points: int
    seconds: float

    @property
    def points_per_s(self) -> float:
        return self.points / self.seconds


async def _writer_pass(cfg: InfluxConfig, lines: list[str], put_size: int) -> float:
    async with aiohttp.ClientSession() as session:
        writer = InfluxWriter(InfluxHttp(session, cfg), cfg, Metrics())
        task = asyncio.create_task(writer.run())
        started = time.perf_counter()
        for k in range(0, len(lines), put_size):
            await writer.put(lines[k : k + put_size])
        await writer.wait_durable(writer.position)
        elapsed = time.perf_counter() - started
        # Stop it between two flushes: cancelling InfluxWriter.run inside its wait_for can
        # hang on Python 3.11 (seen here with 200,000 points; see the report).
        await writer.flush()
        task.cancel()
        await asyncio.wait([task], timeout=5)
    if writer.last_error:
        raise BenchError(f"InfluxWriter: {writer.last_error}")
    return elapsed


def _curl_pass(stack: Stack, db: str, lines: list[str], batch: int, workdir: Path) -> float:
    files = []
    for i, k in enumerate(range(0, len(lines), batch)):
        path = workdir / f"batch-{i:04d}.lp"
        path.write_text("\n".join(lines[k : k + batch]))
        files.append(path)
    config = workdir / "curl.cfg"
    config.touch(mode=0o600)
    url = f"{stack.influx_url}/write?db={db}&precision=ms"
    config.write_text(curl_config(url, stack.influx_user, stack.secret("influx-agent"), files))
    started = time.perf_counter()
    done = subprocess.run(["curl", "-sS", "-K", str(config)], capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    codes = done.stdout.decode().split()
    if done.returncode != 0 or codes != ["204"] * len(files):
        raise BenchError(f"curl /write: exit {done.returncode}, codes {set(codes)}")
    for path in files:
        path.unlink()
    return elapsed


async def compare(
    stack: Stack, lines: list[str], batch: int, put_size: int, workdir: Path
) -> list[WriteResult]:
    points = whole_batches(lines, batch)
    db = await stack.create_database("bench_writes")
    cfg = InfluxConfig(
        url=stack.influx_url,
        database=db,
        username=stack.influx_user,
        password=stack.secret("influx-agent"),
        batch_size=batch,
    )
    results: list[WriteResult] = []
    try:
        await asyncio.to_thread(_curl_pass, stack, db, points, batch, workdir)  # series
        for n in range(PASSES):
            mine = shift_lines(points, 2 * n + 1)
            results.append(
                WriteResult("InfluxWriter", len(mine), await _writer_pass(cfg, mine, put_size))
            )
            raw = shift_lines(points, 2 * n + 2)
            seconds = await asyncio.to_thread(_curl_pass, stack, db, raw, batch, workdir)
            results.append(WriteResult("curl", len(raw), seconds))
    finally:
        await stack.drop_database(db)
    return results
