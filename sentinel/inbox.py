"""The hand-off from the MQTT client to the batch processor.

Messages are added synchronously, from the MQTT client's callback, so that whatever the client
has acknowledged to the broker is already here. Above `high_water` the inbox asks its producer
to pause (the MQTT reader then stops reading its socket, and the broker keeps the messages for
our persistent session); below half of it, to resume. Nothing is dropped here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Inbox:
    def __init__(self, high_water: int, batch_max: int) -> None:
        self._items: list[tuple[str, bytes]] = []
        self._high_water = high_water
        self._batch_max = batch_max
        self._nonempty = asyncio.Event()
        self._closed = False
        self.pause: Callable[[], None] = lambda: None
        self.resume: Callable[[], None] = lambda: None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def add(self, topic: str, payload: bytes) -> None:
        self._items.append((topic, payload))
        self._nonempty.set()
        if len(self._items) >= self._high_water:
            self.pause()

    def close(self) -> None:
        """No more messages will come: `take` returns what is left, then empty batches."""
        self._closed = True
        self._nonempty.set()

    async def take(self, linger_s: float) -> list[tuple[str, bytes]]:
        """Wait for one item, linger so a batch can fill, return at most batch_max items."""
        await self._nonempty.wait()
        if not self._closed and len(self._items) < self._batch_max:
            await asyncio.sleep(linger_s)
        batch = self._items[: self._batch_max]
        del self._items[: self._batch_max]
        if not self._items and not self._closed:
            self._nonempty.clear()
        if len(self._items) < self._high_water // 2:
            self.resume()
        return batch
