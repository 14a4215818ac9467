"""An on-disk spool of line protocol, for when InfluxDB is away.

Append-only segment files, each append fsynced: once `append` returns, the lines survive a
crash, so the agent may acknowledge their messages to the broker. Reading takes the oldest
lines first; a segment is deleted once all its lines are written. A crash while draining
writes part of a segment again on restart, which InfluxDB absorbs: same points, same values.
"""

from __future__ import annotations

import os
from pathlib import Path

SEGMENT_BYTES = 8 * 1024 * 1024


class SpoolFull(Exception):
    """The spool holds `max_bytes`; the caller must wait."""


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._segments = sorted(directory.glob("segment-*.lp"))
        self._next_number = 1 + max((int(p.stem.split("-")[1]) for p in self._segments), default=0)
        self._writing: Path | None = None
        self._head: list[str] = []  # lines of the oldest segment not yet written
        self._head_path: Path | None = None
        self.bytes = sum(p.stat().st_size for p in self._segments)

    def __bool__(self) -> bool:
        return bool(self._head) or bool(self._segments)

    def append(self, lines: list[str]) -> None:
        data = ("\n".join(lines) + "\n").encode()
        if self.bytes + len(data) > self.max_bytes:
            raise SpoolFull(f"spool at {self.bytes} of {self.max_bytes} bytes")
        if self._writing is None or self._writing.stat().st_size + len(data) > SEGMENT_BYTES:
            self._writing = self.directory / f"segment-{self._next_number:09d}.lp"
            self._next_number += 1
            self._segments.append(self._writing)
        with self._writing.open("ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        self.bytes += len(data)

    def head(self, max_lines: int) -> list[str]:
        """The oldest lines, without removing them (see `consume`)."""
        if not self._head and self._segments:
            path = self._segments[0]
            if path == self._writing:
                self._writing = None  # read only closed segments: appends go to a new one
            self._head = path.read_text(encoding="utf-8").splitlines()
            self._head_path = path
        return self._head[:max_lines]

    def consume(self, n: int) -> None:
        del self._head[:n]
        if not self._head and self._head_path is not None:
            self.bytes -= self._head_path.stat().st_size
            self._head_path.unlink()
            self._segments.remove(self._head_path)
            self._head_path = None
