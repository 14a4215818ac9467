"""Structured logs (JSON lines on stderr). Secrets never reach here: config holds them as
SecretStr, and attacker-controlled strings are logged as JSON values, escaped and truncated."""

from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def _truncate(_: object, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    for key, value in event.items():
        if isinstance(value, str) and len(value) > 512:
            event[key] = value[:512] + "…"
    return event


class _StderrLogger:
    """Writes each line to the sys.stderr of the moment, never a stream kept from before: a
    replaced stream (a test runner's, a daemon's) must not leave the agent writing to a closed
    file and dying of it. Holding no stream, it can be cached: a filtered-out debug call then
    costs a method lookup, not a new logger (about 20 µs per rejected message otherwise)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _stderr_logger(*_: object) -> _StderrLogger:
    return _StderrLogger()


def configure(level: str = "info", json_format: bool = True) -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_format
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _truncate,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=True,
    )
    # Libraries that use the standard logging module stay quiet below warnings.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
