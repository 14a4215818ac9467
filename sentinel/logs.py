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


def _stderr_logger(*_: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(file=sys.stderr)


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
        # sys.stderr is looked up per logger, never kept: a replaced stream (a test runner's, a
        # daemon's) must not leave the agent writing to a closed file and dying of it.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    # Libraries that use the standard logging module stay quiet below warnings.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
