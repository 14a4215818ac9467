"""A bounded store of rejected messages, so an operator can see what was refused and why.

Memory holds the newest `capacity` entries; an optional JSON-lines file keeps a history
capped at `max_file_bytes` (rotated once to `.1`). Attacker-controlled text is truncated and
stored as escaped JSON, never interpreted.
"""

from __future__ import annotations

import base64
from collections import deque
from pathlib import Path
from typing import Any

import orjson

TOPIC_PREVIEW = 256
PAYLOAD_PREVIEW = 512


class DeadLetters:
    def __init__(self, capacity: int, path: Path | None = None, max_file_bytes: int = 0) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._path = path
        self._max_file_bytes = max_file_bytes
        self.total = 0

    def add(self, received_at: float, topic: str, payload: bytes, reason: str, detail: str) -> None:
        self.total += 1
        entry = {
            "received_at": round(received_at, 3),
            "reason": reason,
            "detail": detail,
            "topic": topic[:TOPIC_PREVIEW],
            "payload_b64": base64.b64encode(payload[:PAYLOAD_PREVIEW]).decode(),
            "payload_bytes": len(payload),
        }
        if self._entries.maxlen:
            self._entries.append(entry)
        if self._path is not None and self._max_file_bytes:
            self._append_to_file(entry)

    def _append_to_file(self, entry: dict[str, Any]) -> None:
        assert self._path is not None
        line = orjson.dumps(entry) + b"\n"
        try:
            if self._path.exists() and self._path.stat().st_size + len(line) > self._max_file_bytes:
                self._path.replace(self._path.with_suffix(self._path.suffix + ".1"))
            with self._path.open("ab") as fh:
                fh.write(line)
        except OSError:
            pass  # the in-memory copy and the reject counter still record it

    def __len__(self) -> int:
        return len(self._entries)

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        return list(self._entries)[-limit:]
