"""Sentinel's exceptions: a small hierarchy, with context kept as attributes."""

from __future__ import annotations


class SentinelError(Exception):
    """Base of every error Sentinel raises on purpose."""


class ConfigError(SentinelError):
    """The configuration is invalid; `problems` names each offending key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"invalid configuration in {source}:\n  " + "\n  ".join(problems))


class StoreError(SentinelError):
    """A write to the time-series store failed."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True) -> None:
        self.status = status
        self.retryable = retryable
        super().__init__(message)
