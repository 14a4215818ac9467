"""Waiting on an event with a timeout, without losing a cancellation.

On Python 3.11, `asyncio.wait_for` returns normally when the cancellation of the waiting task
arrives in the same loop turn as the event it waits for (fixed in 3.12): a long-lived loop
around it then never stops, and the agent's shutdown hangs. `asyncio.timeout` keeps the
cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until `event` is set or `timeout_s` passes; True if it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()
