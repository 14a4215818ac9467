"""The same checks for every registered detector type (river's check_estimator, in small).

A new detector type needs an example configuration: add it to EXAMPLES below. Its metrics are
drawn from METRICS, which the fleet in `fleet()` reports. A detector that is not meant for
`fleet()`'s exfiltration bursts names the scenario it is meant for in SCENARIOS: a stream
(telemetry, and commands for detectors that read them), the attacked devices with their
windows, and a benign event it must not raise on.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from detectors import registry
from detectors.base import Detector, ScoringDetector
from detectors.model import CommandConsumer, CommandRecord, DeviceRef, Record, Transition
from tests.test_learned_example import example_model_dir

EXAMPLES: dict[str, dict[str, Any]] = {
    "learned": {"metrics": ["upload_kbps", "fps"], "model_dir": example_model_dir()},
    "threshold": {"metric": "upload_kbps", "op": ">", "value": 400.0, "raise_after": 2},
    "seasonal": {"metrics": ["upload_kbps", "fps"], "absolute_floor": {"upload_kbps": 5.0}},
    "cadence": {},
    "integrity": {},
    "identity": {},
    "commands": {"hours": [7, 20]},
    "inventory": {"learn_s": 1800},
    "peer_drift": {"metric": "upload_kbps", "window_s": 300, "min_peers": 1},
}
Item = Record | CommandRecord
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


H = 3600.0
ZONE_A = [
    DeviceRef("lyon", "gerland", k, f"{k[:3]}-a{i}")
    for k in ("video", "lighting")
    for i in range(3)
]
ZONE_B = [
    DeviceRef("lyon", "confluence", k, f"{k[:3]}-b{i}")
    for k in ("video", "lighting")
    for i in range(2)
]
CADENCE_S = {"video": 10.0, "lighting": 60.0, "mobility": 30.0}


def reports(
    devices: Sequence[DeviceRef],
    hours: float,
    shape: Callable[[DeviceRef, int, float], list[Record]] | None = None,
) -> list[Record]:
    """Every device reports at its kind's cadence for `hours`, in the order sent; `shape` may
    drop, alter or add to a report (it gets the device, the report number and its time)."""
    out: list[tuple[float, int, Record]] = []
    for j, device in enumerate(devices):
        step = CADENCE_S[device.kind]
        for n in range(int(hours * H / step)):
            ts = T0 + n * step + j * 0.37
            speed = 40.0 + 10 * np.sin(n / 7 + j)
            metrics = {"speed_kmh": round(float(speed), 1), "upload_kbps": 200.0 + n % 13}
            info = {"client_id": device.device_id, "src_ip": f"10.0.0.{j}", "firmware": "1.0"}
            sent = (
                shape(device, n, ts)
                if shape is not None
                else [Record(device, ts, metrics, n, info)]
            )
            out += [(ts, len(out) + k, r) for k, r in enumerate(sent)]
    return [r for _, _, r in sorted(out)]


def _cadence() -> list[Item]:
    """a0 falls silent while its zone's lights report; a1 floods; zone B loses power."""

    def shape(d: DeviceRef, n: int, ts: float) -> list[Record]:
        r = Record(d, ts, {"upload_kbps": 1.0}, n)
        if d.device_id == "vid-a0" and T0 + 2 * H <= ts < T0 + 2.5 * H:
            return []
        if d.device_id == "vid-a1" and T0 + H <= ts < T0 + 1.5 * H:
            return [r, Record(d, ts + 0.3, r.metrics, n), Record(d, ts + 0.6, r.metrics, n)]
        if d.zone == "confluence" and T0 + 3 * H <= ts < T0 + 3.5 * H:
            return []
        return [r]

    return list(reports(ZONE_A + ZONE_B, 4, shape))


def _integrity() -> list[Item]:
    """a0 replays reports from 10 minutes before; a1 reports an impossible speed."""
    history: dict[str, list[Record]] = {}

    def shape(d: DeviceRef, n: int, ts: float) -> list[Record]:
        r = Record(d, ts, {"speed_kmh": 40.0 + n % 7}, n)
        out = [r]
        if d.device_id == "vid-a0" and T0 + H <= ts < T0 + 1.5 * H:
            out.append(history[d.device_id][-60])
        if d.device_id == "lig-a1" and T0 + 2 * H <= ts < T0 + 2.2 * H:
            out = [Record(d, ts, {"speed_kmh": 900.0}, n)]
        history.setdefault(d.device_id, []).append(r)
        return out

    return list(reports(ZONE_A, 3, shape))


def _identity() -> list[Item]:
    """Zone A's cameras and lights roll out firmware 2.0 (a campaign); lig-b0 moves alone to
    1.0-p1; vid-b0 has a second publisher with another client id."""
    rollout = {d.device_id: T0 + H + 300 * i for i, d in enumerate(ZONE_A)}

    def shape(d: DeviceRef, n: int, ts: float) -> list[Record]:
        info = {"client_id": d.device_id, "src_ip": "10.0.0.1", "firmware": "1.0"}
        if ts >= rollout.get(d.device_id, float("inf")):
            info["firmware"] = "2.0"
        if d.device_id == "lig-b0" and ts >= T0 + 2 * H:
            info["firmware"] = "1.0-p1"
        out = [Record(d, ts, {"upload_kbps": 1.0}, n, info)]
        if d.device_id == "vid-b0" and T0 + 3 * H <= ts < T0 + 3.3 * H:
            forged = {**info, "client_id": "intruder", "src_ip": "10.9.9.9"}
            out.append(Record(d, ts + 0.4, {"upload_kbps": 1.0}, n, forged))
        return out

    return list(reports(ZONE_A + ZONE_B, 4, shape))


def _commands() -> list[Item]:
    """A daytime command to one light (benign); at 03:05 (Lyon) every light of zone B is
    dimmed to zero (mass command at night)."""
    lights = [DeviceRef("lyon", "confluence", "lighting", f"lig-c{i}") for i in range(6)]
    day = 1_700_038_800.0  # 2023-11-15 09:00 UTC
    shifted = day - 8 * H - T0
    stream: list[Item] = [
        Record(r.device, r.ts + shifted, r.metrics, r.seq) for r in reports(lights, 20)
    ]
    stream.append(CommandRecord(lights[0], day + 1800, "set_dim", {"dim_pct": 80.0}, "console"))
    night = day + 17 * H + 5 * 60  # 03:05 the next day, Lyon time
    for i, d in enumerate(lights):
        stream.append(CommandRecord(d, night + 6 * i, "set_dim", {"dim_pct": 0.0}, "mobile-7f3a"))
    return sorted(stream, key=lambda item: item.ts)


def _inventory() -> list[Item]:
    """Zone B loses power for 30 min then comes back (known devices); vid-r0, never seen in
    the first half hour, joins at 2 h and leaves at 2.5 h."""
    rogue = DeviceRef("lyon", "gerland", "video", "vid-r0")

    def shape(d: DeviceRef, n: int, ts: float) -> list[Record]:
        if d == rogue and not T0 + 2 * H <= ts < T0 + 2.5 * H:
            return []
        if d.zone == "confluence" and T0 + H <= ts < T0 + 1.5 * H:
            return []
        return [Record(d, ts, {"upload_kbps": 1.0}, n)]

    return list(reports([*ZONE_A, *ZONE_B, rogue], 3, shape))


@dataclass(frozen=True)
class Attack:
    devices: frozenset[str]
    start: float
    end: float


@dataclass(frozen=True)
class Scenario:
    """A stream a detector is meant for, and the attacks in it."""

    stream: Callable[[], list[Item]]
    attacks: tuple[Attack, ...] = field(default_factory=tuple)


def attack(devices: str | Sequence[str], start: float, end: float) -> Attack:
    return Attack(frozenset([devices] if isinstance(devices, str) else devices), start, end)


SCENARIOS: dict[str, Scenario] = {
    "cadence": Scenario(
        _cadence,
        (attack("vid-a0", T0 + 2 * H, T0 + 2.5 * H), attack("vid-a1", T0 + H, T0 + 1.5 * H)),
    ),
    "integrity": Scenario(
        _integrity,
        (attack("vid-a0", T0 + H, T0 + 1.5 * H), attack("lig-a1", T0 + 2 * H, T0 + 2.2 * H)),
    ),
    "identity": Scenario(
        _identity,
        (attack("lig-b0", T0 + 2 * H, T0 + 3 * H), attack("vid-b0", T0 + 3 * H, T0 + 3.3 * H)),
    ),
    "inventory": Scenario(_inventory, (attack("vid-r0", T0 + 2 * H, T0 + 2.5 * H),)),
    "commands": Scenario(
        _commands,
        (attack([f"lig-c{i}" for i in range(6)], 1_700_100_300.0, 1_700_100_400.0),),
    ),
}


def stream_for(name: str) -> list[Item]:
    scenario = SCENARIOS.get(name)
    return scenario.stream() if scenario is not None else list(fleet()[0])


def make(name: str) -> Detector:
    if name not in EXAMPLES:
        pytest.fail(f"detector type {name!r} has no example in tests/test_detectors_conformance.py")
    return registry.create(name, registry.parse_params(name, EXAMPLES[name]))


def feed(detector: Detector, items: Sequence[Item], batch: int = 64) -> list[Transition]:
    """Batches of `batch` items; inside a batch, runs of telemetry and of commands in order."""
    out: list[Transition] = []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        i = 0
        while i < len(chunk):
            j = i
            is_command = isinstance(chunk[i], CommandRecord)
            while j < len(chunk) and isinstance(chunk[j], CommandRecord) == is_command:
                j += 1
            if not is_command:
                out.extend(detector.update([r for r in chunk[i:j] if isinstance(r, Record)]))
            elif isinstance(detector, CommandConsumer):
                out.extend(
                    detector.update_commands(
                        [c for c in chunk[i:j] if isinstance(c, CommandRecord)]
                    )
                )
            i = j
    return out


NAMES = sorted(registry.detector_types())
SCORING = [n for n in NAMES if issubclass(registry.get(n), ScoringDetector)]


def test_registry_holds_the_builtin_types() -> None:
    assert {"threshold", "seasonal", "cadence", "integrity", "identity", "commands"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_input_not_mutated(name: str) -> None:
    records = stream_for(name)
    before = copy.deepcopy(records)
    feed(make(name), records)
    assert records == before


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_batch_size_free(name: str) -> None:
    records = stream_for(name)
    first = feed(make(name), records, batch=64)
    assert first, "the example stream should make every detector fire at least once"
    assert feed(make(name), records, batch=64) == first
    assert feed(make(name), records, batch=1000) == first
    assert feed(make(name), records, batch=7) == first


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_raises_on_what_it_is_meant_for(name: str) -> None:
    """Every attack raises on one of its devices inside its window (15 minutes' grace), with
    evidence; nothing else raises: the scenario's benign event (power cut, roll-out, daytime
    command) stays quiet."""
    scenario = SCENARIOS[name]
    raised = [t for t in feed(make(name), scenario.stream()) if t.firing]

    def matches(t: Transition, a: Attack) -> bool:
        return t.device.device_id in a.devices and a.start <= t.ts <= a.end + 900

    assert all(t.evidence and any(matches(t, a) for a in scenario.attacks) for t in raised), raised
    assert all(any(matches(t, a) for t in raised) for a in scenario.attacks), raised


@pytest.mark.parametrize("name", NAMES)
def test_save_restore_round_trip(name: str) -> None:
    records = stream_for(name)
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
        telemetry = [r for r in rest[:50] if isinstance(r, Record)]
        assert np.array_equal(straight.score(telemetry), restored.score(telemetry), equal_nan=True)
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
    feed(detector, stream_for(name))
    # Threshold keeps state only for devices past the line, commands only for the devices of
    # its recent window: end on a burst of attack to hold some.
    later = T0 + 10**6
    burst: list[Item] = [
        Record(d, later + i, {"upload_kbps": 5000.0, "fps": 0.0}, info={"client_id": "x"})
        for d in DEVICES
        for i in range(3)
    ]
    burst += [CommandRecord(d, later + 5, "set_dim", {"dim_pct": 0.0}) for d in DEVICES]
    feed(detector, burst)
    held = {d.device_id for d in DEVICES}
    before = detector.tracked_devices()
    assert before >= len(DEVICES)
    detector.forget({DEVICES[0].device_id})
    assert detector.tracked_devices() == before - 1
    detector.forget(held)
    assert detector.tracked_devices() == before - len(DEVICES)


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
