"""Recording files: an MQTT stream with its timestamps, compressed, lossless.

One file holds a header then one entry per line (JSON lines), compressed with gzip (`.gz`, the
default) or Zstandard (`.zst`, when the `zstandard` package is installed):

    {"format": "sentinel-recording", "version": 1, "meta": {...}}
    {"t": 1764374400.25, "topic": "fleet/lyon/...", "p": "<payload, UTF-8>", "q": 1, "r": false}
    {"t": 1764374400.31, "topic": "...", "b": "<payload, base64 if not UTF-8>", "q": 1, "r": false}
    {"t": 1764374401.00, "event": {...}}     # what a broker logged (no message): replay skips it

`t` is when the message was received (recorder) or sent (simulator), Unix seconds. Payload bytes,
topic, QoS and retain flag round-trip exactly. Entries are in the order they were received,
which keeps each device's order (one connection, QoS 1, delivers in order).
"""

from __future__ import annotations

import base64
import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import orjson

FORMAT = "sentinel-recording"
VERSION = 1
_GZIP_LEVEL = 3  # ~4x faster than the default 9 for a few percent more bytes


class RecordingError(ValueError):
    """Not a recording, or a damaged one; the message says where."""


class Recorded(NamedTuple):
    """One recorded MQTT message."""

    ts: float
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class BrokerEvent(NamedTuple):
    """Something the broker saw that is not a message (a refused login, a subscription)."""

    ts: float
    event: dict[str, Any]


Entry = Recorded | BrokerEvent


def _zstd() -> Any:
    try:
        import zstandard  # type: ignore[import-not-found]  # noqa: PLC0415 - optional
    except ImportError:
        raise RecordingError(
            "a .zst recording needs the zstandard package; use a .gz file instead"
        ) from None
    return zstandard


def _open_write(path: Path) -> io.BufferedIOBase:
    if path.suffix == ".zst":
        raw = path.open("wb")
        return _zstd().ZstdCompressor(level=3).stream_writer(raw)  # type: ignore[no-any-return]
    return gzip.open(path, "wb", compresslevel=_GZIP_LEVEL)


def _open_read(path: Path) -> io.BufferedIOBase:
    if path.suffix == ".zst":
        raw = path.open("rb")
        reader = _zstd().ZstdDecompressor().stream_reader(raw)
        return io.BufferedReader(reader)
    return gzip.open(path, "rb")


def encode_entry(entry: Entry) -> bytes:
    if isinstance(entry, BrokerEvent):
        return orjson.dumps({"t": entry.ts, "event": entry.event})
    try:
        text = entry.payload.decode("utf-8")
    except UnicodeDecodeError:
        body: dict[str, Any] = {"b": base64.b64encode(entry.payload).decode()}
    else:
        body = {"p": text}
    return orjson.dumps(
        {"t": entry.ts, "topic": entry.topic, **body, "q": entry.qos, "r": entry.retain}
    )


def decode_entry(line: bytes, where: str) -> Entry:
    try:
        raw = orjson.loads(line)
        if "event" in raw:
            return BrokerEvent(float(raw["t"]), dict(raw["event"]))
        payload = raw["p"].encode("utf-8") if "p" in raw else base64.b64decode(raw["b"])
        return Recorded(float(raw["t"]), str(raw["topic"]), payload, int(raw["q"]), bool(raw["r"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RecordingError(f"{where}: not a recording entry ({exc})") from None


class RecordingWriter:
    """Append entries to a new recording file (a context manager; `close` flushes)."""

    def __init__(self, path: Path | str, meta: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self._fh = _open_write(self.path)
        self.messages = 0
        self.events = 0
        header = {"format": FORMAT, "version": VERSION, "meta": meta or {}}
        self._fh.write(orjson.dumps(header) + b"\n")

    def write(
        self, ts: float, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> None:
        self._fh.write(encode_entry(Recorded(ts, topic, payload, qos, retain)) + b"\n")
        self.messages += 1

    def write_event(self, ts: float, event: dict[str, Any]) -> None:
        self._fh.write(encode_entry(BrokerEvent(ts, event)) + b"\n")
        self.events += 1

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class Recording:
    """A recording file: its header's `meta`, and its entries on demand (streamed)."""

    path: Path
    meta: dict[str, Any]

    def entries(self) -> Iterator[Entry]:
        with _open_read(self.path) as fh:
            fh.readline()
            for n, line in enumerate(fh, start=2):
                if line.strip():
                    yield decode_entry(line, f"{self.path}:{n}")

    def messages(self) -> Iterator[Recorded]:
        return (e for e in self.entries() if isinstance(e, Recorded))


def open_recording(path: Path | str) -> Recording:
    path = Path(path)
    try:
        with _open_read(path) as fh:
            first = fh.readline()
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read: {exc}") from None
    try:
        header = orjson.loads(first)
    except orjson.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise RecordingError(f"{path}: not a {FORMAT} file")
    if header.get("version") != VERSION:
        raise RecordingError(f"{path}: version {header.get('version')} is not supported")
    return Recording(path, dict(header.get("meta") or {}))
