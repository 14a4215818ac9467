"""`sentinel eval`: scoring on hand-made alert lists, and runs through the agent's pipeline."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sentinel.cli import app
from sentinel.config import load_config
from sentinel.evaluation.runner import run_scenario, shard_tenants
from sentinel.evaluation.scoring import AlertRecord, RunOutcome, matches, score
from simulators.anomalies import GroundTruth
from simulators.fleet import build_fleet
from simulators.scenario import load_scenario

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "deploy" / "sentinel.toml"


def attack(kind: str, devices: tuple[str, ...], start: float, end: float) -> GroundTruth:
    return GroundTruth(kind, devices, start, end)


def alert(device: str, start: float, detector: str = "rule") -> AlertRecord:
    return AlertRecord(detector, device, start)


RUN_A = RunOutcome(
    "a",
    truth=[
        attack("x", ("d1", "d2"), 1000, 2000),
        attack("x", ("d3",), 5000, 6000),
        attack("y", ("d4",), 8000, 9000),
        GroundTruth("b", ("d5", "d6"), 3000, 7000, label="benign"),
    ],
    alerts=[
        alert("d1", 1100),  # x#1, 100 s to detect
        alert("d2", 1500),  # x#1 again: true, detection time unchanged
        alert("d3", 6200),  # x#2 inside the grace period: 1,200 s to detect
        alert("d4", 7990),  # before y starts: false, on benign traffic
        alert("d5", 3500, "other"),  # false, during the benign event
        alert("d9", 100),  # false, benign traffic
        alert("d1", 2400),  # after x#1's end + grace: false
    ],
    devices=10,
    span_s=36_000,
)
RUN_B = RunOutcome("b", truth=[], alerts=[alert("d1", 1100)], devices=10, span_s=36_000)


def test_matching_rule_and_grace() -> None:
    t = attack("x", ("d1",), 1000, 2000)
    assert matches(alert("d1", 1000), t, 300)
    assert matches(alert("d1", 2300), t, 300)
    assert not matches(alert("d1", 2300.5), t, 300)
    assert not matches(alert("d1", 999.9), t, 300)
    assert not matches(alert("d2", 1500), t, 300)


def test_a_device_less_alert_matches_by_the_device_ids_it_names() -> None:
    t = attack("x", ("d1", "d2"), 1000, 2000)
    brute = AlertRecord("traffic-brute-force-ip", "_s001", 1100, names=("10.0.0.9", "d2", "root"))
    assert matches(brute, t, 300)
    assert not matches(AlertRecord("traffic-brute-force-ip", "_s001", 1100), t, 300)
    assert not matches(AlertRecord("t", "_s001", 1100, names=("root", "d3")), t, 300)
    assert not matches(AlertRecord("t", "_s001", 999, names=("d1",)), t, 300)  # before it


def test_scoring_known_precision_recall() -> None:
    s = score([RUN_A], grace_s=300)
    x, y = s.kinds["x"], s.kinds["y"]
    assert (x.events, x.detected, x.true_alerts, x.false_alerts) == (2, 2, 3, 4)
    assert x.recall == 1.0
    assert x.precision == pytest.approx(3 / 7)
    assert x.f1 == pytest.approx(0.6)
    d = x.to_dict()
    assert d["ttd_p50_s"] == pytest.approx(650)
    assert d["ttd_p95_s"] == pytest.approx(1145)
    assert (y.events, y.detected, y.recall, y.precision, y.f1) == (1, 0, 0.0, 0.0, 0.0)
    assert y.to_dict()["ttd_p50_s"] is None
    assert (s.alerts, s.true_alerts, s.false_alerts_traffic, s.false_alerts_benign) == (7, 3, 3, 1)
    assert s.precision == pytest.approx(3 / 7)
    assert s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(12 / 23)
    benign_dh = 2 * 4000 / 3600
    assert s.benign["b"].false_alerts == 1
    assert s.fa_benign_per_1000_dh == pytest.approx(1000 / benign_dh)
    assert s.fa_traffic_per_1000_dh == pytest.approx(3000 / (100 - benign_dh))
    assert s.alerts_per_day == pytest.approx(7 / (36_000 / 86_400))
    assert dict(s.by_detector["other"]) == {"alerts": 1, "false": 1}


def test_runs_are_scored_apart() -> None:
    s = score([RUN_A, RUN_B], grace_s=300)
    # Run B's alert on d1 at 1100 is false there: B has no attack.
    assert (s.alerts, s.true_alerts, s.false_alerts_traffic) == (8, 3, 4)
    # ... and is not charged to kind x, which only run A has.
    assert s.kinds["x"].false_alerts == 4
    assert s.device_hours == pytest.approx(200)


def test_no_alerts_no_precision_zero_recall() -> None:
    s = score([RunOutcome("q", [attack("x", ("d1",), 0, 10)], [], 1, 100)])
    assert s.kinds["x"].precision is None
    assert s.kinds["x"].recall == 0.0
    assert s.kinds["x"].f1 == 0.0
    assert s.precision is None


def test_grace_zero_and_negative() -> None:
    late = RunOutcome("g", [attack("x", ("d1",), 0, 10)], [alert("d1", 11)], 1, 100)
    assert score([late], grace_s=0).detected == 0
    assert score([late], grace_s=1).detected == 1
    with pytest.raises(ValueError, match="grace"):
        score([late], grace_s=-1)


def test_eval_detects_the_upload_surge_with_the_shipped_config() -> None:
    cfg = load_config(CONFIG)
    sc = load_scenario("camera-upload-surge")
    result = run_scenario(sc, cfg, devices=40, days=0.6)
    (truth,) = result.truth
    s = score([result.outcome()])
    assert s.kinds["camera_upload_surge"].recall == 1.0
    assert s.false_alerts == 0
    first = min(a.start for a in result.alerts if a.device_id == truth.device_id)
    # raise_after = 3 reports 10 s apart: the third report inside the window raises.
    assert truth.start + 15 < first < truth.start + 40
    assert sum(result.rejected.values()) == 0


def test_workers_split_by_tenant_give_the_same_alerts() -> None:
    cfg = load_config(REPO / "deploy" / "eval.toml")
    sc = load_scenario("mirai-recruitment")
    one = run_scenario(sc, cfg, devices=60, days=0.25)
    two = run_scenario(sc, cfg, devices=60, days=0.25, workers=2)
    assert one.messages == two.messages
    assert one.alerts == two.alerts
    assert one.alerts  # the telnet rule of eval.toml fires


def test_shards_hold_whole_tenants_biggest_alone() -> None:
    fleet = build_fleet(2_000, 1)
    shards = shard_tenants(list(fleet), 2)
    assert set().union(*shards) == {d.tenant for d in fleet}
    assert not shards[0] & shards[1]
    # Greedy by message rate: the biggest tenant alone, the others together.
    rate: defaultdict[str, float] = defaultdict(float)
    for d in fleet:
        rate[d.tenant] += 1 / d.cadence_s
    biggest = max(rate, key=rate.__getitem__)
    assert {biggest} in shards


def test_no_more_shards_than_tenants() -> None:
    fleet = build_fleet(300, 1)
    shards = shard_tenants(list(fleet), 8)
    assert len(shards) == len({d.tenant for d in fleet})


def test_eval_command_json_and_html(tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--scenario",
            "camera-upload-surge",
            "--scenario",
            "command-abuse",  # commands to a whole district: decoded, and the commands detector
            "--devices",
            "30",
            "--days",
            "0.6",
            "--config",
            str(CONFIG),
            "--json",
            "--html",
            str(html),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout[result.stdout.index("{") :])
    assert doc["score"]["attacks"]["camera_upload_surge"]["recall"] == 1.0
    assert doc["runs"][0]["truth"][0]["kind"] == "camera_upload_surge"
    assert doc["score"]["attacks"]["command_abuse"]["recall"] == 1.0
    assert "bad_topic" not in doc["runs"][1]["rejected"]
    text = html.read_text()
    assert "<svg" in text
    assert "camera_upload_surge" in text


def test_eval_command_wire_decodes_every_report_for_the_same_alerts() -> None:
    def run(*extra: str) -> dict[str, Any]:
        args = ["eval", "--scenario", "camera-upload-surge", "--devices", "30", "--days", "0.6"]
        result = CliRunner().invoke(app, [*args, "--config", str(CONFIG), "--json", *extra])
        assert result.exit_code == 0, result.output
        doc: dict[str, Any] = json.loads(result.stdout[result.stdout.index("{") :])
        return doc

    decoded, wire = run(), run("--wire")
    assert (decoded["options"]["wire"], wire["options"]["wire"]) == (False, True)
    assert decoded["runs"][0]["alerts"] == wire["runs"][0]["alerts"]
    assert decoded["runs"][0]["messages"] == wire["runs"][0]["messages"]
    assert decoded["score"]["attacks"]["camera_upload_surge"]["recall"] == 1.0
