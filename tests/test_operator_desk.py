"""Feedback → suggestion → accepted suppression, the audit trail, and state across restarts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from detectors import registry
from detectors.model import DeviceRef, Record, Transition
from detectors.threshold import ThresholdRule
from sentinel.alerting.alerts import Alert, AlertBook, AlertSource
from sentinel.alerting.desk import DeskError, DeskSettings, OperatorDesk
from sentinel.config import DetectorConfig
from sentinel.engine import Engine, build_instances
from sentinel.metrics import Metrics

RULE = AlertSource("camera-upload-surge", "CameraUploadSurge", "threshold", "critical")
CAM = DeviceRef("lyon", "gerland", "video", "lyon-cam-00001")
T0 = 1_790_000_000.0
PARAMS = {"metric": "upload_kbps", "op": ">", "value": 15_000, "raise_after": 2}


def surge(ts: float, firing: bool = True) -> Transition:
    # What the threshold rule puts in its evidence.
    rule = ThresholdRule(registry.parse_params("threshold", PARAMS))
    records = [Record(CAM, ts + i, {"upload_kbps": v}) for i, v in enumerate((16e3, 18e3))]
    (raised,) = rule.update(records)
    return Transition(CAM, firing, ts, raised.summary, raised.evidence)


def make_desk(tmp_path: Path) -> tuple[AlertBook, OperatorDesk, Metrics]:
    metrics = Metrics()
    book = AlertBook(metrics)
    settings = DeskSettings(
        state_file=tmp_path / "desk.json",
        audit_file=tmp_path / "audit.jsonl",
        suggestion_expiry_days=30,
    )
    return book, OperatorDesk(book, metrics, settings), metrics


def test_false_positive_feedback_round_trip(tmp_path: Path) -> None:
    book, desk, metrics = make_desk(tmp_path)
    (alert,) = book.apply(RULE, [surge(T0)])
    fb, made = desk.give_feedback(alert.fingerprint, "fp", "ana@soc", "backup upload", T0 + 60)
    assert (fb.detector, fb.tenant, fb.zone, fb.verdict) == (RULE.name, "lyon", "gerland", "fp")
    (line,) = desk.take_lines()
    assert line.startswith("feedback,tenant=lyon,zone=gerland,detector=camera-upload-surge,")
    assert "verdict=fp" in line
    labels = {"detector": RULE.name, "verdict": "fp"}
    assert metrics.registry.get_sample_value("sentinel_feedback_total", labels) == 1.0
    kinds = {s.kind: s for s in made}
    assert set(kinds) == {"suppress", "threshold"}
    assert kinds["threshold"].proposed == {"param": "value", "value": 18_900.0}
    assert kinds["suppress"].matchers == {"detector": RULE.name, "device_id": CAM.device_id}

    accepted = desk.decide(kinds["suppress"].id, True, "olivier@ops", T0 + 120)
    assert accepted.state == "accepted"
    (sup,) = book.suppressions.all()
    assert sup.author == "olivier@ops"
    assert sup.ends_at == kinds["suppress"].expires_at == pytest.approx(T0 + 60 + 30 * 86400)
    with pytest.raises(DeskError, match="already accepted"):
        desk.decide(kinds["suppress"].id, False, "olivier@ops", T0 + 130)

    # The next episode of the same alert is muted; another device is not.
    book.apply(RULE, [surge(T0 + 200, firing=False)])
    (again,) = book.apply(RULE, [surge(T0 + 300)])
    assert again.state == "suppressed"

    actions = [e["action"] for e in desk.audit.recent]
    assert actions == ["feedback", "suppression.add", "suggestion.accepted"]
    on_disk = [orjson.loads(x) for x in (tmp_path / "audit.jsonl").read_bytes().splitlines()]
    assert [e["action"] for e in on_disk] == actions


def test_desk_state_survives_a_restart(tmp_path: Path) -> None:
    book, desk, _ = make_desk(tmp_path)
    (alert,) = book.apply(RULE, [surge(T0)])
    _, made = desk.give_feedback(alert.fingerprint, "benign", "ana", "", T0)
    desk.decide(made[0].id, True, "ana", T0 + 1)
    book2, desk2, _ = make_desk(tmp_path)
    assert [s.id for s in book2.suppressions.all()] == [s.id for s in book.suppressions.all()]
    assert {s.id: s.state for s in desk2.suggestions.values()} == {
        s.id: s.state for s in desk.suggestions.values()
    }


def test_true_positive_suggests_nothing_and_unknown_targets_are_refused(tmp_path: Path) -> None:
    book, desk, _ = make_desk(tmp_path)
    (alert,) = book.apply(RULE, [surge(T0)])
    assert desk.give_feedback(alert.fingerprint, "tp", "ana", "", T0)[1] == []
    with pytest.raises(DeskError, match="no recent alert or incident") as err:
        desk.give_feedback("0123456789abcdef", "fp", "ana", "", T0)
    assert err.value.status == 404
    with pytest.raises(DeskError, match="verdict"):
        desk.give_feedback(alert.fingerprint, "maybe", "ana", "", T0)
    with pytest.raises(DeskError, match="author"):
        desk.give_feedback(alert.fingerprint, "fp", "  ", "", T0)


def test_incident_feedback_suggests_muting_its_detectors_in_its_zone(tmp_path: Path) -> None:
    book, desk, _ = make_desk(tmp_path)
    (alert,) = book.apply(RULE, [surge(T0)])
    _, made = desk.give_feedback(alert.incident, "fp", "ana", "test bench", T0)
    (s,) = made
    assert s.matchers == {"detector": RULE.name, "tenant": "lyon", "zone": "gerland"}


def test_unanswered_suggestions_and_api_suppressions_expire(tmp_path: Path) -> None:
    book, desk, _ = make_desk(tmp_path)
    (alert,) = book.apply(RULE, [surge(T0)])
    _, made = desk.give_feedback(alert.fingerprint, "fp", "ana", "", T0)
    desk.add_suppression(
        matchers={"zone": "gerland"},
        starts_at=T0,
        ends_at=T0 + 3600,
        author="ops",
        reason="works",
        kind="maintenance",
        now=T0,
    )
    desk.expire(T0 + 3600)
    assert len(book.suppressions) == 0
    desk.expire(T0 + 31 * 86400)
    assert {s.state for s in desk.suggestions.values()} == {"expired"}
    with pytest.raises(DeskError, match="already expired"):
        desk.decide(made[0].id, True, "ana", T0 + 31 * 86400)
    assert "maintenance.expired" in [e["action"] for e in desk.audit.recent]


def test_a_true_positive_rejects_the_new_normal_its_detector_adopted(tmp_path: Path) -> None:
    """A camera's upload doubles; the seasonal detector raises, then adopts the new level as
    normal and clears. The analyst marks the alert a true positive: the detector goes back to
    the old level and raises again on the same traffic."""
    book, desk, _ = make_desk(tmp_path)
    params = {
        "metrics": ["upload_kbps"],
        "season": "none",
        "shift_after": 6,
        "new_extreme_margin": None,  # no noise-driven "new extreme" episode before the shift
    }
    detector = DetectorConfig(
        name="camera-upload", type="seasonal", kinds=("video",), params=params
    )
    engine = Engine(build_instances([detector]))
    desk.reject_new_normal = engine.reject_new_normal
    rng = np.random.default_rng(3)

    def feed(start: int, n: int, level: float) -> list[Alert]:
        records = [
            Record(CAM, T0 + 60 * (start + i), {"upload_kbps": level + rng.normal(0, 20)})
            for i in range(n)
        ]
        changed: list[Alert] = []
        for source, transitions in engine.process(records):
            changed += book.apply(source, transitions)
        return changed

    feed(0, 400, 3000.0)
    raised, cleared = feed(400, 30, 6000.0)  # raised, then adopted as normal: cleared
    assert raised is cleared
    assert raised.state == "resolved"
    fb, _ = desk.give_feedback(raised.fingerprint, "tp", "ana@soc", "exfiltration", T0 + 30_000)
    (undone,) = fb.undone
    assert undone.startswith("upload_kbps: level shift of +")
    (again,) = feed(430, 10, 6000.0)
    assert (again.state, again.firing) == ("firing", True)
    entry = orjson.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
    assert entry["new_normal_rejected"] == [undone]
    # A false positive on it undoes nothing: the operator agrees the level is normal.
    fb, _ = desk.give_feedback(again.fingerprint, "fp", "ana@soc", "", T0 + 31_000)
    assert fb.undone == ()


def test_a_false_positive_on_a_peer_rule_suggests_a_new_peer_factor(tmp_path: Path) -> None:
    """A peer rule's line is peer_factor x the peers' quantile: the suggestion moves the factor
    so that the peak seen would not have fired."""
    book, desk, _ = make_desk(tmp_path)
    params = {
        "metric": "driver_temp_c",
        "op": ">",
        "value_from": "peers",
        "peer_quantile": 0.99,
        "min_peers": 5,
    }
    rule = ThresholdRule(registry.parse_params("threshold", params))
    lamps = [DeviceRef("lyon", "gerland", "lighting", f"lamp-{i}") for i in range(8)]
    rule.update([Record(lamp, T0, {"driver_temp_c": 40.0 + i}) for i, lamp in enumerate(lamps)])
    (raised,) = rule.update([Record(lamps[0], T0 + 60, {"driver_temp_c": 70.0})])
    source = AlertSource("lamp-hotter-than-peers", "LampHot", "threshold", "warning")
    (alert,) = book.apply(source, [raised])
    _, made = desk.give_feedback(alert.fingerprint, "fp", "ana@soc", "hot day", T0 + 120)
    (proposal,) = [s for s in made if s.kind == "threshold"]
    assert proposal.proposed["param"] == "peer_factor"
    factor = float(proposal.proposed["value"])
    line = raised.evidence["peer_value"]
    assert isinstance(line, float)
    assert 70.0 / line < factor < 1.2 * 70.0 / line  # just above the peak, with a margin
    assert "peer_factor =" in proposal.detail
