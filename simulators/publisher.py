"""Publish a message stream to a real broker, paced so simulated time runs `speed` times faster.

The pacing loop runs in a worker thread (paho is synchronous, and generating messages is CPU work);
`publish` awaits it, so cancelling the awaiting task stops publishing cleanly.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from simulators.messages import Message
from simulators.mqtt_session import BrokerUrl, MqttSession, PublishError

# Ahead of schedule by less than this: publish now rather than pay for a sleep per message.
MIN_SLEEP_S = 0.005
PROGRESS_EVERY_S = 0.5
CONNECT_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 60.0

__all__ = ["Pacer", "PublishError", "PublishStats", "Sink", "publish"]


@dataclass(frozen=True, slots=True)
class PublishStats:
    published: int
    acked: int
    # Messages the client refused to send (never counted as published).
    errors: int
    elapsed_s: float
    # Simulated time of the last message handed to the client; None before the first.
    sim_ts: float | None
    # How far behind its schedule the last message went out, wall seconds.
    lag_s: float = 0.0
    disconnects: int = 0


async def publish(
    messages: Iterable[Message],
    *,
    mqtt_url: str,
    username: str | None,
    password: str | None,
    client_id: str,
    speed: float,
    wall_start: float | None = None,
    stop_after_s: float | None = None,
    on_progress: Callable[[PublishStats], None] | None = None,
) -> PublishStats:
    """Publish `messages` (in simulated-time order) and wait for the broker's acks.

    A message at simulated time t goes out at wall time `wall_start + (t - first_ts) / speed`
    (`wall_start`: Unix time, default now; `speed=math.inf`: as fast as possible). Messages that
    are late go out at once. `stop_after_s` stops publishing after that many wall seconds.
    `on_progress` is called on the event loop about twice a second. The password is never logged.
    Raises PublishError when the broker cannot be reached or refuses the login.
    """
    if not speed > 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    url = BrokerUrl.parse(mqtt_url)
    session = MqttSession(url, username=username, password=password, client_id=client_id)
    loop = asyncio.get_running_loop()

    def report(stats: PublishStats) -> None:
        if on_progress is not None:
            loop.call_soon_threadsafe(on_progress, stats)

    try:
        await loop.run_in_executor(None, session.connect, CONNECT_TIMEOUT_S)
        pacer = Pacer(session, speed=speed, wall_start=wall_start, stop_after_s=stop_after_s)
        work = loop.run_in_executor(None, pacer.run, messages, report)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            pacer.stop.set()
            await asyncio.wait([work])
            raise
    finally:
        await asyncio.shield(loop.run_in_executor(None, session.close))


class Sink(Protocol):
    """Where paced messages go (an MqttSession, or a fake in tests)."""

    published: int
    acked: int
    errors: int
    disconnects: int

    def publish(self, message: Message, give_up: threading.Event) -> None: ...

    def drain(self, timeout_s: float) -> bool: ...


class Pacer:
    """Hands messages to a sink on their wall-clock schedule, from the calling thread."""

    def __init__(
        self,
        session: Sink,
        *,
        speed: float,
        wall_start: float | None,
        stop_after_s: float | None,
    ) -> None:
        self.session = session
        self.speed = speed
        self.started = time.monotonic()
        # Wall-clock start converted to the monotonic clock, which NTP steps cannot move.
        self.mono_start = self.started + (0.0 if wall_start is None else wall_start - time.time())
        self.deadline = math.inf if stop_after_s is None else self.started + stop_after_s
        self.stop = threading.Event()
        self.sim_ts: float | None = None
        self.lag_s = 0.0

    def run(
        self, messages: Iterable[Message], report: Callable[[PublishStats], None]
    ) -> PublishStats:
        first_ts: float | None = None
        next_report = self.started
        for message in messages:
            if first_ts is None:
                first_ts = message.ts
            due = self.mono_start + (message.ts - first_ts) / self.speed
            now = time.monotonic()
            if due - now > MIN_SLEEP_S and self.stop.wait(min(due, self.deadline) - now):
                break
            now = max(now, min(due, self.deadline))
            if now >= self.deadline or self.stop.is_set():
                break
            self.session.publish(message, self.stop)
            self.sim_ts, self.lag_s = message.ts, max(now - due, 0.0)
            if now >= next_report:
                report(self.stats())
                next_report = now + PROGRESS_EVERY_S
        self.session.drain(0.0 if self.stop.is_set() else DRAIN_TIMEOUT_S)
        final = self.stats()
        report(final)
        return final

    def stats(self) -> PublishStats:
        s = self.session
        return PublishStats(
            published=s.published,
            acked=s.acked,
            errors=s.errors,
            elapsed_s=time.monotonic() - self.started,
            sim_ts=self.sim_ts,
            lag_s=self.lag_s,
            disconnects=s.disconnects,
        )
