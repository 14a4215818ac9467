"""Jittered, capped exponential backoff (full jitter), so reconnecting agents don't stampede."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self._attempt = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.minimum * 2.0**self._attempt)
        self._attempt = min(self._attempt + 1, 32)
        jitter: float = self._rng.random()
        return self.minimum + jitter * (ceiling - self.minimum)

    def reset(self) -> None:
        self._attempt = 0
