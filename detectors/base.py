"""The detector contract.

A detector is pure: it sees records and its own state, never a socket or the wall clock.
`__init__` only stores validated parameters; learned state lives in attributes ending in `_`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from detectors import state as state_codec
from detectors.columns import Columns
from detectors.model import DeviceRef, EvidenceValue, Record, Transition

Scores = npt.NDArray[np.float64]


class DetectorParams(BaseModel):
    """Base of every detector's parameter model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


METRIC_NAME = r"^[a-z][a-z0-9_]{0,63}$"  # as the decoder accepts them


def check_metric_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """For detectors' `metrics` parameters: valid names, none twice."""
    for name in names:
        if not re.match(METRIC_NAME, name):
            raise ValueError(f"metric name {name!r} must match {METRIC_NAME}")
    if len(set(names)) != len(names):
        raise ValueError("metrics are listed twice")
    return names


class Detector(ABC):
    """A stream detector: feed it batches of records, get back state changes."""

    type_name: ClassVar[str]
    params_model: ClassVar[type[DetectorParams]]

    def __init__(self, params: DetectorParams) -> None:
        self.params = params

    @abstractmethod
    def update(self, records: Sequence[Record]) -> list[Transition]:
        """Consume records in time order; return the devices whose verdict changed."""

    def update_columns(self, columns: Columns) -> list[Transition]:
        """`update` on a batch seen as columns (detectors.columns): the same transitions.
        Detectors that can clear most of a batch with array operations override it."""
        return self.update(columns.records)

    @abstractmethod
    def tracked_devices(self) -> int:
        """How many devices this detector holds state for (bounded memory is checked on it)."""

    @abstractmethod
    def forget(self, device_ids: set[str]) -> None:
        """Drop state for these devices (evicted by the agent's device cap)."""

    def reject_new_normal(self, device: DeviceRef, since: float) -> list[str]:
        """An operator says the levels this detector adopted as `device`'s new normal at or
        after `since` (device time: the start of the alert judged real) are not normal: undo
        them, so the device is judged against its old level again. Returns what was undone,
        one line per series; detectors that adopt nothing: []."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """The learned state as plain JSON-able data (never pickle).

        The default encodes every attribute ending in ``_``; detectors with large state
        override it with an explicit layout.
        """
        return state_codec.wrap(self.type_name, state_codec.encode_learned(self))

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Replace the learned state by one saved with `state_dict` (raises `StateError`)."""
        learned = state_codec.unwrap(self.type_name, state)
        expected = set(state_codec.encode_learned(self))
        if set(learned) != expected:
            raise state_codec.StateError(
                f"state holds {sorted(learned)}, a {self.type_name} detector has {sorted(expected)}"
            )
        for name, value in learned.items():
            setattr(self, name, state_codec.decode(value))


Change = Literal["raise", "clear"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """A scoring detector's decision on one metric of one record, with its evidence.

    `score` is in [0, 1], higher = more anomalous. `expected_low`/`expected_high` is the range
    the baseline named in `baseline` expected. `change` is set on the point that raised or
    cleared an alert; `suppressed` marks points inside the quiet period after a raise (they
    cannot raise again: one alert per episode).
    """

    device: DeviceRef
    ts: float
    metric: str
    value: float
    score: float
    anomalous: bool
    expected: float
    expected_low: float
    expected_high: float
    baseline: str
    reason: str = ""
    change: Change | None = None
    suppressed: bool = False

    def evidence(self) -> dict[str, EvidenceValue]:
        return {
            "metric": self.metric,
            "value": self.value,
            "score": round(self.score, 6),
            "expected": self.expected,
            "expected_low": self.expected_low,
            "expected_high": self.expected_high,
            "baseline": self.baseline,
            "reason": self.reason,
        }

    def transition(self) -> Transition:
        if self.change is None:
            raise ValueError("this verdict changed nothing")
        firing = self.change == "raise"
        where = f"{self.metric} on {self.device.device_id}"
        if firing:
            summary = (
                f"{where} is {self.value:g}, expected {self.expected_low:g}..{self.expected_high:g}"
                f" ({self.reason}, {self.baseline})"
            )
        else:
            summary = f"{where} is back to normal ({self.reason or 'within range'})"
        return Transition(self.device, firing, self.ts, summary, self.evidence())


class ScoringDetector(Detector):
    """A detector that scores: batch `learn` / `score`, a decision step, and `update` on top.

    - `learn(records)`: take records as normal and update the baselines (e.g. history).
    - `score(records)`: one score per record in [0, 1] (max over the detector's metrics,
      NaN when it scores none of them), against the current state, learning nothing.
    - `decide(records)`: the stream step: score each record in order, decide, then learn from
      it unless it was flagged (`learn_flagged`, False by default, protects the baseline).
    - `update(records)`: the engine's entry point: the verdicts that raised or cleared.
    """

    @abstractmethod
    def learn(self, records: Sequence[Record]) -> None:
        """Update the baselines from records taken as normal."""

    @abstractmethod
    def score(self, records: Sequence[Record]) -> Scores:
        """Score records against the current state without learning from them."""

    @abstractmethod
    def decide(self, records: Sequence[Record]) -> list[Verdict]:
        """Score, decide and learn, record by record; one verdict per scored metric."""

    def update(self, records: Sequence[Record]) -> list[Transition]:
        return [v.transition() for v in self.decide(records) if v.change is not None]
