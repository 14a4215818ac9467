from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import pytest

from sentinel.asyncutil import wait_event

Waiter = Callable[[asyncio.Event, float], Awaitable[object]]


async def loop_until_cancelled(wait: Waiter, event: asyncio.Event, turns: list[int]) -> None:
    while True:  # the shape of the writer's and the sinks' loops
        await wait(event, 10.0)
        event.clear()
        turns.append(1)


async def cancelled_while_set(wait: Waiter) -> bool:
    """Set the event and cancel the looping task in the same loop turn: does the task end?"""
    event = asyncio.Event()
    turns: list[int] = []
    task = asyncio.create_task(loop_until_cancelled(wait, event, turns))
    await asyncio.sleep(0.01)
    event.set()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=1.0)
    if not done:
        task.cancel()  # leave nothing running
        await asyncio.wait([task], timeout=1.0)
    return bool(done)


async def test_a_cancellation_as_the_event_fires_stops_the_loop() -> None:
    assert await cancelled_while_set(wait_event)


async def test_wait_for_on_this_python_loses_it() -> None:
    """Why wait_event exists: the same loop around asyncio.wait_for keeps running (3.11)."""

    async def with_wait_for(event: asyncio.Event, timeout: float) -> object:  # noqa: ASYNC109
        return await asyncio.wait_for(event.wait(), timeout)

    if sys.version_info >= (3, 12):
        pytest.skip("wait_for keeps cancellations from Python 3.12 on")
    assert not await cancelled_while_set(with_wait_for)


async def test_times_out_and_reports_the_event() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 0.01) is True
