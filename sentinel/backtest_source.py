"""Telemetry history from InfluxDB, streamed back as `Record`s in time order (for backtests).

One InfluxQL query per kind measurement (`lighting`, `mobility`, `video`) and per time window,
read as InfluxDB's chunked JSON (one JSON object per line, `chunk_size` rows each), and merged
across measurements by time. Memory holds at most about one chunk per measurement, whatever the
fleet or the span: the rows are never all loaded at once.

The query names the three tags explicitly after the fields (`*::field, "tenant"::tag, ...`), so
the last three columns are always tenant, zone and device_id, even when a device sent a metric
called `zone` (InfluxDB then renames one of the two columns `zone_1`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import math
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import aiohttp
import orjson

from detectors.model import DeviceRef, Record
from sentinel.errors import SentinelError
from sentinel.store.influx import basic_auth_header

TAGS = ("tenant", "zone", "device_id")
_MAX_TAG_CHARS = 64
_READ_BYTES = 1 << 16


class BacktestError(SentinelError):
    """A backtest cannot run (InfluxDB unreachable or refusing, no data, bad options)."""


@dataclass(frozen=True)
class InfluxSource:
    """Where the history is, and which part of it to read."""

    url: str
    database: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    tenant: str | None = None
    zone: str | None = None

    def describe(self) -> str:
        where = [f"database {self.database!r} at {self.url}"]
        if self.tenant:
            where.append(f"tenant {self.tenant!r}")
        if self.zone:
            where.append(f"zone {self.zone!r}")
        return ", ".join(where)


def _ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def select_query(
    kind: str, start_ms: int, end_ms: int, tenant: str | None = None, zone: str | None = None
) -> str:
    """The InfluxQL for one kind over [start_ms, end_ms), optionally one tenant and zone."""
    tags = ", ".join(f"{_ident(t)}::tag" for t in TAGS)
    where = [f"time >= {start_ms * 1_000_000}", f"time < {end_ms * 1_000_000}"]
    if tenant:
        where.append(f'"tenant"::tag = {_literal(tenant)}')
    if zone:
        where.append(f'"zone"::tag = {_literal(zone)}')
    # Every name and value above is quoted and escaped: the query is not injectable.
    return f"SELECT *::field, {tags} FROM {_ident(kind)} WHERE {' AND '.join(where)}"  # noqa: S608


@dataclass(frozen=True, slots=True)
class Columns:
    """Where things are in a row of `select_query`: time first, fields, then the three tags."""

    width: int
    metrics: tuple[tuple[int, str], ...]  # (row index, metric name)
    seq: int | None  # row index of the `seq` field

    @classmethod
    def parse(cls, columns: Sequence[object]) -> Columns:
        names = [str(c) for c in columns]
        if len(names) < 1 + len(TAGS) or names[0] != "time":
            raise BacktestError(f"unexpected InfluxDB columns {names[:8]}")
        fields = range(1, len(names) - len(TAGS))
        seq = next((i for i in fields if names[i] == "seq"), None)
        metrics = tuple((i, names[i]) for i in fields if i != seq)
        return cls(len(names), metrics, seq)


def _tag_ok(value: object) -> TypeGuard[str]:
    return type(value) is str and 0 < len(value) <= _MAX_TAG_CHARS and value.isprintable()


_NUMBERS = (float, int)  # by type(), not isinstance: a JSON true is no metric


def row_to_record(kind: str, cols: Columns, row: Sequence[Any], max_metrics: int) -> Record | str:
    """A row as the Record the agent decoded, or the reason it is skipped.

    Null fields are metrics the device did not send. Metrics are floats (the schema stores them
    so); `seq` is the integer field of that name.
    """
    if len(row) != cols.width:
        return "bad_row"
    t, tenant, zone, device_id = row[0], row[-3], row[-2], row[-1]
    if type(t) is not int:
        return "bad_time"
    if not (_tag_ok(tenant) and _tag_ok(zone) and _tag_ok(device_id)):
        return "bad_tag"
    metrics = {name: float(v) for i, name in cols.metrics if type(v := row[i]) in _NUMBERS}
    if not metrics:
        return "no_metrics"
    if len(metrics) > max_metrics:
        return "too_many_metrics"
    if not all(map(math.isfinite, metrics.values())):
        return "non_finite"
    seq = row[cols.seq] if cols.seq is not None else None
    if type(seq) is not int or seq < 0:
        seq = None
    return Record(DeviceRef(tenant, zone, kind, device_id), t / 1000.0, metrics, seq)


def http_error(status: int, body: bytes, source: InfluxSource) -> BacktestError:
    """What an InfluxDB refusal means for the user (never echoing the credentials)."""
    try:
        message = str(orjson.loads(body).get("error", ""))[:300]
    except (orjson.JSONDecodeError, AttributeError):
        message = body[:300].decode("utf-8", "replace")
    user = source.username or "(no user)"
    if status == 401:
        return BacktestError(
            f"InfluxDB at {source.url} refused the credentials of {user!r} ({message}): "
            "check influxdb.username and influxdb.password_file, or --username/--password-file"
        )
    if status == 403:
        return BacktestError(
            f"InfluxDB user {user!r} may not read database {source.database!r} ({message})"
        )
    return BacktestError(f"InfluxDB at {source.url} answered {status}: {message}")


def _result_error(body: object, source: InfluxSource) -> BacktestError | None:
    if not isinstance(body, dict):
        return BacktestError("InfluxDB sent a chunk that is not a JSON object")
    if "error" in body:
        return BacktestError(f"InfluxDB query failed: {str(body['error'])[:300]}")
    for result in body.get("results") or []:
        if isinstance(result, dict) and "error" in result:
            text = str(result["error"])[:300]
            if text.startswith("database not found"):
                return BacktestError(
                    f"InfluxDB at {source.url} has no database {source.database!r}"
                )
            return BacktestError(f"InfluxDB query failed: {text}")
    return None


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _series(body: object) -> list[dict[str, Any]]:
    """The series of a chunk; anything not shaped like InfluxDB's answer is ignored."""
    results = _list(body.get("results")) if isinstance(body, dict) else []
    return [
        series
        for result in results
        if isinstance(result, dict)
        for series in _list(result.get("series"))
        if isinstance(series, dict)
    ]


async def _lines(content: aiohttp.StreamReader, max_bytes: int) -> AsyncIterator[bytes]:
    """Newline-separated chunks of a streamed response, each at most `max_bytes` long."""
    buf = bytearray()
    scanned = 0
    async for piece in content.iter_chunked(_READ_BYTES):
        buf += piece
        while (nl := buf.find(b"\n", scanned)) >= 0:
            yield bytes(buf[:nl])
            del buf[: nl + 1]
            scanned = 0
        scanned = len(buf)
        if scanned > max_bytes:
            raise BacktestError(
                f"an InfluxDB chunk exceeds {max_bytes:,} bytes: lower --chunk-size"
            )
    if buf.strip():
        yield bytes(buf)


@dataclass
class ReadStats:
    rows: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    queries: int = 0


class InfluxHistory:
    """Reads telemetry history; `records()` yields batches of Records in time order."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        source: InfluxSource,
        kinds: Sequence[str],
        *,
        chunk_size: int = 2000,
        max_metrics: int = 64,
        max_chunk_bytes: int = 64 << 20,
    ) -> None:
        self._session = session
        self.source = source
        self.kinds = tuple(kinds)
        self._chunk_size = chunk_size
        self._max_metrics = max_metrics
        self._max_chunk_bytes = max_chunk_bytes
        self._headers = (
            basic_auth_header(source.username, source.password)
            if source.username and source.password
            else {}
        )
        # No total timeout: a week streams for minutes. Each read must progress, though.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=source.timeout_s, sock_read=source.timeout_s
        )
        self.stats = ReadStats()

    async def _chunks(self, query: str) -> AsyncGenerator[object]:
        data = {
            "q": query,
            "db": self.source.database,
            "epoch": "ms",
            "chunked": "true",
            "chunk_size": str(self._chunk_size),
        }
        url = f"{self.source.url.rstrip('/')}/query"
        self.stats.queries += 1
        try:
            async with self._session.post(
                url, data=data, headers=self._headers, timeout=self._timeout
            ) as resp:
                if resp.status != 200:
                    raise http_error(resp.status, await resp.content.read(4096), self.source)
                async for line in _lines(resp.content, self._max_chunk_bytes):
                    if not line.strip():
                        continue
                    try:
                        body = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        raise BacktestError("InfluxDB sent a chunk that is not JSON") from None
                    problem = _result_error(body, self.source)
                    if problem is not None:
                        raise problem
                    yield body
        except aiohttp.ClientConnectorError as exc:
            raise BacktestError(
                f"cannot reach InfluxDB at {self.source.url}: {exc.os_error}"
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BacktestError(
                f"reading from InfluxDB at {self.source.url} failed: {type(exc).__name__} {exc}"
            ) from None

    async def kind_records(
        self, kind: str, start_ms: int, end_ms: int
    ) -> AsyncGenerator[list[Record]]:
        """One measurement over one window, a chunk at a time, in time order."""
        query = select_query(kind, start_ms, end_ms, self.source.tenant, self.source.zone)
        async for body in self._chunks(query):
            out: list[Record] = []
            for series in _series(body):
                cols = Columns.parse(_list(series.get("columns")))
                for row in _list(series.get("values")):
                    self.stats.rows += 1
                    rec = (
                        row_to_record(kind, cols, row, self._max_metrics)
                        if isinstance(row, list)
                        else "bad_row"
                    )
                    if isinstance(rec, str):
                        self.stats.skipped[rec] += 1
                    else:
                        out.append(rec)
            if out:
                yield out

    async def records(
        self, since_ms: int, until_ms: int, window_ms: int
    ) -> AsyncGenerator[tuple[int, list[Record]]]:
        """(window end, batch) over [since, until), window by window, in time order."""
        for start in range(since_ms, until_ms, window_ms):
            end = min(start + window_ms, until_ms)
            streams = [prefetched(self.kind_records(k, start, end)) for k in self.kinds]
            try:
                async for batch in merge_by_time(streams):
                    yield end, batch
            finally:
                for s in streams:
                    await s.aclose()
            yield end, []  # the window is done (progress)


async def prefetched(
    chunks: AsyncGenerator[list[Record]], depth: int = 1
) -> AsyncGenerator[list[Record]]:
    """`chunks`, read ahead by up to `depth` chunks in a task: InfluxDB produces the next
    chunk of each measurement while the detectors work on the current ones."""
    queue: asyncio.Queue[list[Record] | BaseException | None] = asyncio.Queue(depth)

    async def pump() -> None:
        try:
            async for chunk in chunks:
                await queue.put(chunk)
            await queue.put(None)
        except Exception as exc:  # handed to the reader, raised there
            await queue.put(exc)

    task = asyncio.create_task(pump(), name="backtest-read")
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await chunks.aclose()


async def merge_by_time(
    streams: Sequence[AsyncIterator[list[Record]]],
) -> AsyncIterator[list[Record]]:
    """Merge streams of time-ordered chunks into time-ordered batches.

    Everything up to the smallest "last time buffered" over the streams still open can be
    emitted: no stream can later produce anything earlier. Each round empties at least the
    buffer that set that watermark, and refills only empty buffers, so memory stays at about
    one chunk per stream.
    """
    buffers: list[list[Record]] = [[] for _ in streams]
    open_ = [True] * len(streams)
    while True:
        for i, stream in enumerate(streams):
            while open_[i] and not buffers[i]:
                chunk = await anext(stream, None)
                if chunk is None:
                    open_[i] = False
                else:
                    buffers[i] = chunk
        if not any(buffers):
            return
        watermark = min(
            (buffers[i][-1].ts for i in range(len(streams)) if open_[i]), default=math.inf
        )
        parts: list[list[Record]] = []
        for i, buf in enumerate(buffers):
            k = bisect.bisect_right(buf, watermark, key=_ts)
            if k:
                parts.append(buf[:k])
                buffers[i] = buf[k:]
        yield list(heapq.merge(*parts, key=_ts)) if len(parts) > 1 else parts[0]


def _ts(r: Record) -> float:
    return r.ts
