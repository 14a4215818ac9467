"""A bounded hand-off from the MQTT reader to the batch processor.

Policy when full: the reader waits. It then stops reading the socket, and the broker keeps
the QoS 1 messages for our persistent session; nothing is dropped here.
"""

from __future__ import annotations

import asyncio


class Inbox:
    def __init__(self, max_pending: int, batch_max: int) -> None:
        self._items: list[tuple[str, bytes]] = []
        self._max_pending = max_pending
        self._batch_max = batch_max
        self._nonempty = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, topic: str, payload: bytes) -> None:
        if len(self._items) >= self._max_pending:
            self._space.clear()
            await self._space.wait()
        self._items.append((topic, payload))
        self._nonempty.set()

    async def take(self, linger_s: float) -> list[tuple[str, bytes]]:
        """Wait for one item, linger so a batch can fill, return at most batch_max items."""
        await self._nonempty.wait()
        if len(self._items) < self._batch_max:
            await asyncio.sleep(linger_s)
        batch = self._items[: self._batch_max]
        del self._items[: self._batch_max]
        if not self._items:
            self._nonempty.clear()
        self._space.set()
        return batch
