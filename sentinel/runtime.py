"""Run a coroutine until it ends or SIGTERM/SIGINT arrives; shutdown is cancellation."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def _until_signal(main: Coroutine[Any, Any, T]) -> T | None:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return None
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run_until_signal(main: Coroutine[Any, Any, T]) -> T | None:
    """Returns the coroutine's result, or None when a signal stopped it."""
    return asyncio.run(_until_signal(main))
