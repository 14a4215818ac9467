"""The same checks for every registered detector type (river's check_estimator, in small).

A new detector type needs an example configuration: add it to EXAMPLES below. Its metrics are
drawn from METRICS, which the fleet in `fleet()` reports.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from detectors import registry
from detectors.base import Detector, ScoringDetector
from detectors.model import DeviceRef, Record, Transition

EXAMPLES: dict[str, dict[str, Any]] = {
    "threshold": {"metric": "upload_kbps", "op": ">", "value": 400.0, "raise_after": 2},
    "seasonal": {"metrics": ["upload_kbps", "fps"], "absolute_floor": {"upload_kbps": 5.0}},
}
METRICS = ("upload_kbps", "fps")
DEVICES = [DeviceRef("lyon", "gerland", "video", f"cam-{i}") for i in range(3)]
STEP = 300.0
T0 = 1_700_000_000.0


def fleet(n: int = 1200, seed: int = 11) -> tuple[list[Record], np.ndarray]:
    """Cameras with a daily upload pattern; some points are exfiltration bursts (label 1)."""
    rng = np.random.default_rng(seed)
    records: list[Record] = []
    labels: list[int] = []
    for i in range(n):
        ts = T0 + i * STEP
        daily = 1 + 0.5 * np.sin(2 * np.pi * ts / 86_400)
        for k, device in enumerate(DEVICES):
            upload = 200 * daily + rng.normal(0, 10)
            attack = i > 700 and (i + 37 * k) % 150 < 3
            if attack:
                upload += 600
            metrics = {"upload_kbps": float(upload), "fps": float(25 + rng.normal(0, 0.5))}
            if (i + k) % 97 == 0:
                metrics.pop("fps")  # a missing field
            if (i + k) % 89 == 0:
                metrics["firmware_build"] = 1234.0  # a field nobody configured
            records.append(Record(device, ts, metrics))
            labels.append(int(attack))
    return records, np.array(labels)


def make(name: str) -> Detector:
    if name not in EXAMPLES:
        pytest.fail(f"detector type {name!r} has no example in tests/test_detectors_conformance.py")
    return registry.create(name, registry.parse_params(name, EXAMPLES[name]))


def feed(detector: Detector, records: Sequence[Record], batch: int = 64) -> list[Transition]:
    out: list[Transition] = []
    for start in range(0, len(records), batch):
        out.extend(detector.update(records[start : start + batch]))
    return out


NAMES = sorted(registry.detector_types())
SCORING = [n for n in NAMES if issubclass(registry.get(n), ScoringDetector)]


def test_registry_holds_the_builtin_types() -> None:
    assert {"threshold", "seasonal"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_input_not_mutated(name: str) -> None:
    records, _ = fleet(400)
    before = copy.deepcopy([(r.device, r.ts, r.metrics, r.seq) for r in records])
    feed(make(name), records)
    assert [(r.device, r.ts, r.metrics, r.seq) for r in records] == before


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_batch_size_free(name: str) -> None:
    records, _ = fleet()
    first = feed(make(name), records, batch=64)
    assert first, "the example fleet should make every detector fire at least once"
    assert feed(make(name), records, batch=64) == first
    assert feed(make(name), records, batch=1000) == first


@pytest.mark.parametrize("name", NAMES)
def test_save_restore_round_trip(name: str) -> None:
    records, _ = fleet()
    half = len(records) // 2
    straight = make(name)
    feed(straight, records[:half])
    state = straight.state_dict()
    text = json.dumps(state, allow_nan=False)  # plain JSON, no pickle, no NaN
    restored = make(name)
    restored.load_state(json.loads(text))
    assert restored.tracked_devices() == straight.tracked_devices()
    assert restored.state_dict() == state
    rest = records[half:]
    if isinstance(straight, ScoringDetector) and isinstance(restored, ScoringDetector):
        assert np.array_equal(straight.score(rest[:50]), restored.score(rest[:50]), equal_nan=True)
    assert feed(restored, rest) == feed(straight, rest)


@pytest.mark.parametrize("name", NAMES)
def test_state_of_another_type_is_refused(name: str) -> None:
    other = next(n for n in NAMES if n != name)
    state = make(other).state_dict()
    with pytest.raises(ValueError, match="state"):
        make(name).load_state(state)


@pytest.mark.parametrize("name", NAMES)
def test_missing_and_new_fields_tolerated(name: str) -> None:
    detector = make(name)
    device = DEVICES[0]
    odd = [
        Record(device, T0, {}),
        Record(device, T0 + STEP, {"something_new": 1.0}),
        Record(device, T0 + 2 * STEP, {"fps": 25.0}),
        Record(device, T0 + 3 * STEP, {"upload_kbps": float("nan")}),
    ]
    assert detector.update(odd) == []
    records, _ = fleet(300)
    feed(detector, records)


@pytest.mark.parametrize("name", NAMES)
def test_forget_drops_state(name: str) -> None:
    detector = make(name)
    records, _ = fleet()
    feed(detector, records)
    # Threshold keeps state only for devices past the line; end on an attack to hold some.
    burst = [
        Record(d, T0 + 10**6 + i, {"upload_kbps": 5000.0, "fps": 0.0})
        for d in DEVICES
        for i in range(3)
    ]
    detector.update(burst)
    assert detector.tracked_devices() == len(DEVICES)
    detector.forget({DEVICES[0].device_id})
    assert detector.tracked_devices() == len(DEVICES) - 1
    detector.forget({d.device_id for d in DEVICES})
    assert detector.tracked_devices() == 0


@pytest.mark.parametrize("name", SCORING)
def test_scores_are_bounded_and_scoring_learns_nothing(name: str) -> None:
    detector = make(name)
    assert isinstance(detector, ScoringDetector)
    records, _ = fleet(600)
    detector.learn(records[:900])
    state = detector.state_dict()
    scores = detector.score(records[900:])
    assert scores.shape == (len(records) - 900,)
    finite = scores[~np.isnan(scores)]
    assert finite.size
    assert np.all((finite >= 0) & (finite <= 1))
    assert detector.state_dict() == state
    assert np.isnan(detector.score([Record(DEVICES[0], T0, {"other": 1.0})])[0])


@pytest.mark.parametrize("name", SCORING)
def test_score_auc_above_chance_on_what_it_is_meant_for(name: str) -> None:
    detector = make(name)
    assert isinstance(detector, ScoringDetector)
    records, labels = fleet()
    verdict_scores: dict[tuple[DeviceRef, float], float] = {}
    for start in range(0, len(records), 64):
        for v in detector.decide(records[start : start + 64]):
            key = (v.device, v.ts)
            verdict_scores[key] = max(verdict_scores.get(key, 0.0), v.score)
    scores = np.array([verdict_scores.get((r.device, r.ts), 0.0) for r in records])
    keep = np.arange(len(records)) > 3 * 300  # after warm-up
    assert auc(scores[keep], labels[keep]) > 0.9


@pytest.mark.parametrize("name", SCORING)
def test_verdicts_carry_evidence(name: str) -> None:
    detector = make(name)
    records, _ = fleet()
    raised = [t for t in feed(detector, records) if t.firing]
    assert raised
    ev = raised[0].evidence
    for key in ("metric", "value", "expected_low", "expected_high", "baseline", "score"):
        assert key in ev, key


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that an anomalous point outscores a normal one (ties count half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))
