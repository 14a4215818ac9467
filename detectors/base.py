"""The detector contract.

A detector is pure: it sees records and its own state, never a socket or the wall clock.
`__init__` only stores validated parameters; learned state lives in attributes ending in `_`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from detectors.model import Record, Transition


class DetectorParams(BaseModel):
    """Base of every detector's parameter model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Detector(ABC):
    """A stream detector: feed it batches of records, get back state changes."""

    type_name: ClassVar[str]
    params_model: ClassVar[type[DetectorParams]]

    def __init__(self, params: DetectorParams) -> None:
        self.params = params

    @abstractmethod
    def update(self, records: Sequence[Record]) -> list[Transition]:
        """Consume records in time order; return the devices whose verdict changed."""

    @abstractmethod
    def tracked_devices(self) -> int:
        """How many devices this detector holds state for (bounded memory is checked on it)."""

    @abstractmethod
    def forget(self, device_ids: set[str]) -> None:
        """Drop state for these devices (evicted by the agent's device cap)."""
