"""Run the agent until it ends or SIGTERM/SIGINT asks it to stop; SIGHUP reloads."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

_STOP = (signal.SIGTERM, signal.SIGINT)


async def _until_signal(
    main: Coroutine[Any, Any, None],
    on_stop: Callable[[], None],
    on_reload: Callable[[], Coroutine[Any, Any, object]] | None,
) -> None:
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[object]] = set()

    def reload() -> None:
        assert on_reload is not None
        task = loop.create_task(on_reload(), name="config-reload")
        reloads.add(task)  # keep a reference until it ends
        task.add_done_callback(reloads.discard)

    for sig in _STOP:
        loop.add_signal_handler(sig, on_stop)
    if on_reload is not None:
        loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await main
    finally:
        for sig in (*_STOP, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def run_until_signal(
    main: Coroutine[Any, Any, None],
    on_stop: Callable[[], None],
    on_reload: Callable[[], Coroutine[Any, Any, object]] | None = None,
) -> None:
    """`on_stop` asks `main` to finish (an orderly stop, not a cancellation)."""
    asyncio.run(_until_signal(main, on_stop, on_reload))
