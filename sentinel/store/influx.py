"""InfluxDB through the v1 HTTP API (`/write` with line protocol, `/query` with InfluxQL).

The v1 API is served by InfluxDB 1.x and, through compatibility endpoints, by 2.x and 3.x,
so this client runs against every generation.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections import deque
from typing import Any

import aiohttp
import structlog

from sentinel.backoff import Backoff
from sentinel.config import InfluxConfig
from sentinel.errors import StoreError
from sentinel.metrics import Metrics

log = structlog.get_logger(__name__)


class InfluxHttp:
    """A thin v1 API client; credentials travel in a Basic auth header, never in URLs."""

    def __init__(self, session: aiohttp.ClientSession, cfg: InfluxConfig) -> None:
        self._session = session
        self._base = cfg.url.rstrip("/")
        self._db = cfg.database
        secret = cfg.secret()
        self._headers = basic_auth_header(cfg.username, secret) if cfg.username and secret else {}
        self._timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)

    async def ping(self) -> bool:
        try:
            async with self._session.get(f"{self._base}/ping", timeout=self._timeout) as resp:
                return resp.status == 204
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def write(self, body: bytes) -> None:
        url = f"{self._base}/write"
        params = {"db": self._db, "precision": "ms"}
        try:
            async with self._session.post(
                url, params=params, data=body, headers=self._headers, timeout=self._timeout
            ) as resp:
                if resp.status == 204:
                    return
                text = (await resp.text())[:300]
                # 400 means InfluxDB refused some points (it stores the rest): retrying the same
                # bytes cannot succeed. Auth, missing database and 5xx can heal: retry those.
                raise StoreError(
                    f"InfluxDB /write answered {resp.status}: {text}",
                    status=resp.status,
                    retryable=resp.status != 400,
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise StoreError(f"InfluxDB unreachable: {type(exc).__name__}") from None

    async def query(self, influxql: str, *, db: str | None = None) -> dict[str, Any]:
        data = {"q": influxql, "db": db or self._db, "epoch": "ms"}
        async with self._session.post(
            f"{self._base}/query", data=data, headers=self._headers, timeout=self._timeout
        ) as resp:
            body: dict[str, Any] = await resp.json(content_type=None)
            if resp.status != 200 or "error" in body:
                raise StoreError(f"InfluxQL failed ({resp.status}): {str(body)[:300]}")
            return body


class InfluxWriter:
    """Batches lines by size and time; retries failed batches in order, without dropping them.

    `put` waits when `max_buffered_points` are pending: the pipeline slows, the MQTT client
    stops reading, and the broker queues messages for our persistent session.
    """

    def __init__(self, http: InfluxHttp, cfg: InfluxConfig, metrics: Metrics) -> None:
        self._http = http
        self._cfg = cfg
        self._metrics = metrics
        self._lines: deque[str] = deque()
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self.healthy = True
        self.last_error: str | None = None
        # Lines ever put, and lines whose fate is settled (stored, or refused by InfluxDB):
        # both grow in FIFO order, so a position is durable once `_durable` reaches it.
        self._enqueued = 0
        self._durable = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def pending(self) -> int:
        return len(self._lines)

    @property
    def durable(self) -> int:
        return self._durable

    @property
    def position(self) -> int:
        """The position just after the last line put: pass it to `wait_durable`."""
        return self._enqueued

    async def wait_durable(self, position: int) -> None:
        if self._durable >= position:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((position, future))
        await future

    def _settled(self, n: int) -> None:
        self._durable += n
        still: list[tuple[int, asyncio.Future[None]]] = []
        for position, future in self._waiters:
            if position <= self._durable:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((position, future))
        self._waiters = still

    async def put(self, lines: list[str]) -> None:
        while len(self._lines) >= self._cfg.max_buffered_points:
            self._space.clear()
            await self._space.wait()
        self._lines.extend(lines)
        self._enqueued += len(lines)
        self._metrics.queue_depth.labels("influx").set(len(self._lines))
        if len(self._lines) >= self._cfg.batch_size:
            self._ready.set()

    async def run(self) -> None:
        backoff = Backoff(0.2, self._cfg.retry_max_s)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), self._cfg.flush_interval_s)
            self._ready.clear()
            while self._lines:
                if await self._write_head():
                    backoff.reset()
                else:
                    await asyncio.sleep(backoff.next_delay())
                if len(self._lines) < self._cfg.batch_size:
                    break

    async def _write_head(self) -> bool:
        n = min(len(self._lines), self._cfg.batch_size)
        batch = [self._lines[i] for i in range(n)]
        started = time.perf_counter()
        try:
            await self._http.write("\n".join(batch).encode())
        except StoreError as exc:
            self._metrics.influx_write_errors.labels(
                "rejected" if not exc.retryable else "unavailable"
            ).inc()
            self.last_error = str(exc)
            if exc.retryable:
                self.healthy = False
                log.warning("influx_write_failed", error=str(exc), pending=len(self._lines))
                return False
            log.error("influx_points_refused", error=str(exc), points=n)
        else:
            self._metrics.influx_points_written.inc(n)
            self.healthy = True
        self._metrics.influx_write_seconds.observe(time.perf_counter() - started)
        for _ in range(n):
            self._lines.popleft()
        self._settled(n)
        self._metrics.queue_depth.labels("influx").set(len(self._lines))
        self._space.set()
        return True

    async def flush(self, deadline_s: float = 10.0) -> int:
        """Write what is pending (for shutdown); returns how many lines are still unwritten."""
        end = time.monotonic() + deadline_s
        while self._lines and time.monotonic() < end:
            if not await self._write_head():
                await asyncio.sleep(0.2)
        return len(self._lines)


def basic_auth_header(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}
