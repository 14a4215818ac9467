"""A store that keeps counts in memory: the offline demo's stand-in when InfluxDB is absent."""

from __future__ import annotations

from collections import Counter


class MemoryStore:
    def __init__(self) -> None:
        self.points: Counter[str] = Counter()  # by measurement

    async def put(self, lines: list[str]) -> None:
        self.points.update(line.split(",", 1)[0] for line in lines)
