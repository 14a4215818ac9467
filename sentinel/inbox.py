"""The hand-off from the MQTT client to the batch processor.

Messages are added synchronously, from the MQTT client's callback (`add`, one at a time) or
its protocol's `data_received` (`extend`, a whole chunk). Each carries what is needed
to acknowledge it later: the agent sends the PUBACK only once the message's data is durable, so
a message in here is still the broker's responsibility. Above `high_water` the inbox asks its
producer to pause (the MQTT reader then stops reading its socket, and the broker keeps the
messages for our persistent session); below half of it, to resume. Nothing is dropped here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

# (connection number, packet id): an ack is only valid on the connection that received it.
Ack = tuple[int, int]


@dataclass(slots=True)
class Delivery:
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    acks: list[Ack | None] = field(default_factory=list)  # one per message; None for QoS 0


class Inbox:
    def __init__(self, high_water: int, batch_max: int) -> None:
        self._messages: list[tuple[str, bytes]] = []
        self._acks: list[Ack | None] = []  # parallel to _messages
        self._high_water = high_water
        self._batch_max = batch_max
        self._nonempty = asyncio.Event()
        self._closed = False
        self.pause: Callable[[], None] = lambda: None
        self.resume: Callable[[], None] = lambda: None

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def closed(self) -> bool:
        return self._closed

    def add(self, topic: str, payload: bytes, ack: Ack | None = None) -> None:
        self._messages.append((topic, payload))
        self._acks.append(ack)
        self._nonempty.set()
        if len(self._messages) >= self._high_water:
            self.pause()

    def extend(self, messages: list[tuple[str, bytes]], acks: list[Ack | None]) -> None:
        """Many messages at once (a reader that parses a whole chunk): one call, one check."""
        if len(messages) != len(acks):
            raise ValueError("one ack (or None) per message")
        if not messages:
            return
        self._messages += messages
        self._acks += acks
        self._nonempty.set()
        if len(self._messages) >= self._high_water:
            self.pause()

    def close(self) -> None:
        """No more messages will come: `take` returns what is left, then empty deliveries."""
        self._closed = True
        self._nonempty.set()

    async def take(self, linger_s: float) -> Delivery:
        """Wait for one message, linger so a batch can fill, return at most batch_max messages
        with their acks."""
        await self._nonempty.wait()
        if not self._closed and len(self._messages) < self._batch_max:
            await asyncio.sleep(linger_s)
        n = self._batch_max
        out = Delivery(self._messages[:n], self._acks[:n])
        del self._messages[:n], self._acks[:n]
        if not self._messages and not self._closed:
            self._nonempty.clear()
        if len(self._messages) < self._high_water // 2:
            self.resume()
        return out
