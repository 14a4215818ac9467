"""InfluxDB through the v1 HTTP API (`/write` with line protocol, `/query` with InfluxQL).

The v1 API is served by InfluxDB 1.x and, through compatibility endpoints, by 2.x and 3.x,
so this client runs against every generation.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import deque
from typing import Any

import aiohttp
import structlog

from sentinel.asyncutil import wait_event
from sentinel.backoff import Backoff
from sentinel.config import InfluxConfig
from sentinel.errors import StoreError
from sentinel.metrics import Metrics
from sentinel.store.spool import Spool, SpoolFull

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
    """Batches lines by size and time and writes them in order, without dropping any.

    While InfluxDB answers, lines wait in memory. Once writes have failed for `spool_after_s`,
    once the oldest line in memory has waited `spool_lag_s` (InfluxDB answers, but slower than
    lines come), or once memory holds `max_buffered_points`, lines go to the on-disk spool
    instead, and stay there in order until the spool is drained. A slow InfluxDB then delays
    storage, not acknowledgements: the broker keeps sending, and detection keeps its pace.
    Without a spool, or with a full one, `put` waits: the pipeline slows, the MQTT reader
    pauses, and the broker keeps the messages for our persistent session.

    A line is *durable* once InfluxDB has it or the spool has fsynced it (`wait_durable`);
    the agent acknowledges a message to the broker only then.
    """

    def __init__(
        self, http: InfluxHttp, cfg: InfluxConfig, metrics: Metrics, spool: Spool | None = None
    ) -> None:
        self._http = http
        self._cfg = cfg
        self._metrics = metrics
        self._spool = spool
        self._lines: deque[str] = deque()
        self._writing = asyncio.Lock()
        # Set by `_spill`, cleared when a write starts: a batch from memory on its way was
        # spooled meanwhile (and settled), so it must not be popped again.
        self._spilled_during_write = False
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self.healthy = True
        self.failing_since: float | None = None
        self.last_error: str | None = None
        # Lines ever put, and lines whose fate is settled (stored, spooled, or refused by
        # InfluxDB): both grow in FIFO order, so a position is durable once `durable` reaches it.
        self._enqueued = 0
        self.durable = 0
        # (position after a put, when): the first entry not yet durable dates the oldest line.
        self._put_at: deque[tuple[int, float]] = deque()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        if spool is not None:
            metrics.spool_capacity_bytes.set(spool.max_bytes)
            metrics.spool_bytes.set(spool.bytes)

    @property
    def pending(self) -> int:
        return len(self._lines)

    @property
    def position(self) -> int:
        """The position just after the last line put: pass it to `wait_durable`."""
        return self._enqueued

    async def wait_durable(self, position: int) -> None:
        if self.durable >= position:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((position, future))
        await future

    def _settled(self, n: int) -> None:
        self.durable += n
        while self._put_at and self._put_at[0][0] <= self.durable:
            self._put_at.popleft()
        still: list[tuple[int, asyncio.Future[None]]] = []
        for position, future in self._waiters:
            if position > self.durable:
                still.append((position, future))
            elif not future.done():
                future.set_result(None)
        self._waiters = still

    def _should_spool(self) -> bool:
        if self._spool is None:
            return False
        if self._spool:
            return True  # keep order: nothing overtakes what is already spooled
        now = time.monotonic()
        outage = self.failing_since is not None and (
            now - self.failing_since >= self._cfg.spool_after_s
        )
        lagging = bool(self._put_at) and now - self._put_at[0][1] >= self._cfg.spool_lag_s
        return outage or lagging or len(self._lines) >= self._cfg.max_buffered_points

    def _spill(self) -> bool:
        """Move every line in memory to the spool; False when the spool is full.

        Never waits for a batch on its way to InfluxDB: a stalled write must not hold up
        acks. That batch is spooled too, so it may be written twice: the same points again,
        which InfluxDB absorbs."""
        assert self._spool is not None
        if not self._lines:
            return True
        try:
            self._spool.append(list(self._lines))
        except SpoolFull:
            return False
        n = len(self._lines)
        self._lines.clear()
        self._spilled_during_write = True
        self._settled(n)
        self._metrics.spooled_points.inc(n)
        self._metrics.spool_bytes.set(self._spool.bytes)
        self._metrics.queue_depth.labels("influx").set(0)
        return True

    async def put(self, lines: list[str]) -> None:
        if not lines:
            return
        self._lines.extend(lines)
        self._enqueued += len(lines)
        self._put_at.append((self._enqueued, time.monotonic()))
        self._metrics.queue_depth.labels("influx").set(len(self._lines))
        if self._should_spool() and self._spill():
            return
        while len(self._lines) >= self._cfg.max_buffered_points:
            self._space.clear()
            await self._space.wait()
            if self._should_spool():
                self._spill()
        if len(self._lines) >= self._cfg.batch_size:
            self._ready.set()

    async def run(self) -> None:
        backoff = Backoff(0.2, self._cfg.retry_max_s)
        while True:
            await wait_event(self._ready, self._cfg.flush_interval_s)
            self._ready.clear()
            while self._lines or self._spool:
                if await self._write_next():
                    backoff.reset()
                else:
                    if self._should_spool():
                        self._spill()
                    await asyncio.sleep(backoff.next_delay())
                if not self._spool and len(self._lines) < self._cfg.batch_size:
                    break

    async def _write_next(self) -> bool:
        """Write the oldest batch (spooled lines first); False when InfluxDB is unavailable."""
        # `run` and `flush` may both be writing: one batch at a time, or both would send, then
        # pop, the same lines.
        async with self._writing:
            return await self._write_next_unlocked()

    async def _write_next_unlocked(self) -> bool:
        if self._should_spool():
            self._spill()  # lines may have aged past spool_lag_s with no put since
        from_spool = bool(self._spool)
        if self._spool:
            batch = self._spool.head(self._cfg.batch_size)
        else:
            batch = [self._lines[i] for i in range(min(len(self._lines), self._cfg.batch_size))]
        if not batch:
            return True
        self._spilled_during_write = False
        if not await self._send(batch):
            return False
        if from_spool:
            assert self._spool is not None
            self._spool.consume(len(batch))
            self._metrics.spool_bytes.set(self._spool.bytes)
            if not self._spool:
                log.info("spool_drained")
        elif not self._spilled_during_write:  # else the spool has these lines, settled
            for _ in range(len(batch)):
                self._lines.popleft()
            self._settled(len(batch))
            self._metrics.queue_depth.labels("influx").set(len(self._lines))
        self._space.set()
        return True

    async def _send(self, batch: list[str]) -> bool:
        started = time.perf_counter()
        try:
            await self._http.write("\n".join(batch).encode())
        except StoreError as exc:
            self.last_error = str(exc)
            if exc.retryable:
                self._metrics.influx_write_errors.labels("unavailable").inc()
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                self.healthy = False
                log.warning("influx_write_failed", error=str(exc), pending=len(self._lines))
                return False
            self._metrics.influx_write_errors.labels("rejected").inc()
            log.error("influx_points_refused", error=str(exc), points=len(batch))
        else:
            self._metrics.influx_points_written.inc(len(batch))
            self.healthy, self.failing_since = True, None
        self._metrics.influx_write_seconds.observe(time.perf_counter() - started)
        return True

    async def flush(self, deadline_s: float = 10.0) -> int:
        """For shutdown: write what is in memory, or spool it; returns lines left unsettled."""
        end = time.monotonic() + deadline_s
        while self._lines and time.monotonic() < end:
            if self._spool is not None and (self._spool or not self.healthy):
                self._spill()
                break
            if not await self._write_next():
                await asyncio.sleep(0.2)
        return len(self._lines)


def basic_auth_header(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}
