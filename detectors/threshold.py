"""Threshold rule with hysteresis: N consecutive points past the line raise, M back clear."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import Field

from detectors.base import Detector, DetectorParams
from detectors.model import DeviceRef, Record, Transition
from detectors.registry import register

Comparison = Literal[">", ">=", "<", "<=", "==", "!="]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


class ThresholdParams(DetectorParams):
    metric: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    op: Comparison
    value: float
    raise_after: int = Field(default=1, ge=1, le=10_000)
    clear_after: int = Field(default=1, ge=1, le=10_000)


def _more_extreme(op: str, a: float, b: float) -> float:
    if op[0] == ">":
        return max(a, b)
    if op[0] == "<":
        return min(a, b)
    return b


class _DeviceState:
    """A firing device: its run lengths and the most extreme value of the episode. It clears
    only after a full run of `clear_after` points back within the line."""

    __slots__ = ("breaching", "clearing", "peak")

    def __init__(self, breaching: int, peak: float) -> None:
        self.breaching = breaching
        self.clearing = 0
        self.peak = peak


@register("threshold")
class ThresholdRule(Detector):
    params_model = ThresholdParams
    params: ThresholdParams

    def __init__(self, params: DetectorParams) -> None:
        if not isinstance(params, ThresholdParams):
            raise TypeError("ThresholdRule needs ThresholdParams")
        super().__init__(params)
        # A device past the line but not raised yet is only its run length, an int (small
        # ints are shared: no object per device); a firing one has a _DeviceState; a quiet
        # one has nothing.
        self.state_: dict[DeviceRef, int | _DeviceState] = {}

    def update(self, records: Sequence[Record]) -> list[Transition]:
        p = self.params
        crosses = _OPS[p.op]
        metric, line = p.metric, p.value
        changes: list[Transition] = []
        for record in records:
            value = record.metrics.get(metric)
            if value is None:
                continue
            state = self.state_.get(record.device)
            if crosses(value, line):
                if isinstance(state, _DeviceState):
                    state.clearing = 0
                    state.breaching += 1
                    state.peak = _more_extreme(p.op, state.peak, value)
                    continue
                run = (state or 0) + 1
                if run < p.raise_after:
                    self.state_[record.device] = run
                    continue
                raised = self.state_[record.device] = _DeviceState(run, value)
                changes.append(self._transition(record, value, raised, firing=True))
            elif isinstance(state, _DeviceState):
                state.breaching = 0
                state.clearing += 1
                if state.clearing >= p.clear_after:
                    changes.append(self._transition(record, value, state, firing=False))
                    del self.state_[record.device]
            elif state is not None:
                # A quiet device needs no state: dropping it keeps memory bounded.
                del self.state_[record.device]
        return changes

    def _transition(
        self, record: Record, value: float, state: _DeviceState, *, firing: bool
    ) -> Transition:
        p = self.params
        verb = "crossed" if firing else "is back within"
        summary = f"{p.metric} {verb} {p.op} {p.value:g} on {record.device.device_id} ({value:g})"
        return Transition(
            device=record.device,
            firing=firing,
            ts=record.ts,
            summary=summary,
            evidence={
                "metric": p.metric,
                "value": value,
                "peak": state.peak,
                "condition": f"{p.metric} {p.op} {p.value:g}",
                "op": p.op,
                "threshold": p.value,
                "points": p.raise_after if firing else p.clear_after,
            },
        )

    def tracked_devices(self) -> int:
        return len(self.state_)

    def forget(self, device_ids: set[str]) -> None:
        for ref in [ref for ref in self.state_ if ref.device_id in device_ids]:
            del self.state_[ref]
