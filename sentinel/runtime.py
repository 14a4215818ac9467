"""Run the agent until it ends or SIGTERM/SIGINT asks it to stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any


async def _until_signal(main: Coroutine[Any, Any, None], on_signal: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await main
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run_until_signal(main: Coroutine[Any, Any, None], on_signal: Callable[[], None]) -> None:
    """`on_signal` asks `main` to finish (an orderly stop, not a cancellation)."""
    asyncio.run(_until_signal(main, on_signal))
