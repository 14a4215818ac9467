"""`sentinel eval` feeds a run's broker events through the agent's traffic analysis.

MQTT-layer attacks (brute force, reconnaissance, a client id cloned from another address) leave
no telemetry: these runs detect them only if their broker events reach the analyzer and its
alerts the alert book.
"""

from __future__ import annotations

from pathlib import Path

from sentinel.config import Config, load_config
from sentinel.evaluation.broker import BrokerTraffic, fleet_inventory
from sentinel.evaluation.runner import RunResult, run_recording, run_scenario
from sentinel.evaluation.scoring import score
from sentinel.traffic.config import ALERT_KINDS
from sentinel.traffic.live import alert_source
from simulators.fleet import build_fleet
from simulators.scenario import Scenario, load_scenario, scenario_start
from simulators.scenario_run import prepare, write_recording

REPO = Path(__file__).resolve().parents[1]
EVAL_CONFIG = REPO / "deploy" / "eval.toml"
HOUR = 3600.0
ANALYZER = {alert_source(kind, "warning").name for kind in ALERT_KINDS}  # traffic-brute-force-ip


def cfg() -> Config:
    return load_config(EVAL_CONFIG)


def run(sc: Scenario, from_hour: float, hours: float, workers: int = 1) -> RunResult:
    """A short run starting `from_hour` hours after the scenario's own start."""
    start = scenario_start(sc) + from_hour * HOUR
    return run_scenario(sc, cfg(), devices=30, days=hours / 24, start=start, workers=workers)


def traffic(result: RunResult) -> list[str]:
    """The traffic analysis' detectors that raised alerts in the run."""
    return sorted({a.detector for a in result.alerts if a.detector in ANALYZER})


def test_bruteforce_is_detected_from_its_refused_logins() -> None:
    result = run(load_scenario("mqtt-bruteforce"), 2.5, 1.5)  # 02:30-04:00, attack at 03:10
    (truth,) = result.truth
    assert result.broker_events == 600
    s = score([result.outcome()])
    assert s.kinds["mqtt_bruteforce"].recall == 1.0
    assert s.false_alerts == 0
    assert "traffic-brute-force-ip" in traffic(result)
    (alert,) = [a for a in result.alerts if a.detector == "traffic-brute-force-ip"]
    # No device (the attacker's address is no inventory device): matched by the ids it tried.
    assert alert.device_id.startswith("_s")
    assert set(truth.devices) <= set(alert.names)
    assert {"admin", "root", "127.0.0.3"} <= set(alert.names)
    # The alert starts at the first of the refusals that reached the threshold.
    assert truth.start <= alert.start < truth.start + 60
    assert alert.end is not None  # resolved after the campaign, on the simulated clock
    assert truth.end <= alert.end


def test_reconnaissance_is_detected_from_its_subscriptions() -> None:
    result = run(load_scenario("mqtt-reconnaissance"), 23, 0.75)  # attack at 23:20
    (truth,) = result.truth
    assert result.broker_events == 2
    s = score([result.outcome()])
    assert s.kinds["mqtt_reconnaissance"].recall == 1.0
    assert s.false_alerts == 0
    (alert,) = result.alerts
    assert alert.detector == "traffic-forbidden-subscription"
    assert truth.devices[0] in alert.names  # the bike dock whose credentials were used
    assert alert.start == truth.start


def test_cloned_client_id_is_detected_from_its_connects() -> None:
    sc = load_scenario("impersonation")
    result = run(sc, 14.75, 1)  # only the second event: the client id cloned at 15:00
    (truth,) = result.truth
    assert "from another address" in truth.detail
    s = score([result.outcome()])
    assert s.kinds["impersonation"].recall == 1.0
    assert s.false_alerts == 0
    clones = [a for a in result.alerts if a.detector == "traffic-client-id-multi-ip"]
    assert [a.names for a in clones] == [truth.devices]
    assert clones[0].start == truth.start


def test_benign_broker_events_raise_no_alert(tmp_path: Path) -> None:
    """A device subscribing to its own command topic is what devices do; '#' is not."""
    fleet = build_fleet(30, 0)
    lamp = next(d for d in fleet if d.kind == "lighting").device_id

    def scenario(label: str, topic: str) -> Scenario:
        path = tmp_path / f"{label}.toml"
        path.write_text(
            f'name = "own-topics-{label}"\nsummary = "x"\n[run]\nseed = 0\n'
            f'[[events]]\nkind = "subscribe_{label}"\nlabel = "{label}"\nat = "10:00"\n'
            f'duration = "5m"\ntargets = {{ ids = ["{lamp}"] }}\n'
            f'[[events.effects]]\ntype = "mqtt_subscribe"\ntopics = ["{topic}"]\n'
        )
        return load_scenario(path)

    benign = run(scenario("benign", f"fleet/+/+/+/{lamp}/command"), 9.75, 0.5)
    assert benign.broker_events == 1
    s = score([benign.outcome()])
    assert s.alerts == 0
    assert s.false_alerts == 0
    attack = run(scenario("attack", "fleet/#"), 9.75, 0.5)  # the same, but every device's topics
    assert score([attack.outcome()]).kinds["subscribe_attack"].recall == 1.0


def test_workers_send_the_broker_events_to_one_book() -> None:
    sc = load_scenario("mqtt-bruteforce")
    one = run(sc, 3, 0.5)
    two = run(sc, 3, 0.5, workers=2)
    assert one.broker_events == two.broker_events == 600
    assert one.alerts == two.alerts
    assert "traffic-brute-force-ip" in traffic(two)


def test_a_recording_gives_the_same_traffic_alerts(tmp_path: Path) -> None:
    sc = load_scenario("mqtt-reconnaissance")
    start = scenario_start(sc) + 23 * HOUR
    path = tmp_path / "recon.gz"
    pre = prepare(sc, devices=30, days=0.75 / 24, start=start)
    write_recording(pre, path)
    simulated = run_scenario(sc, cfg(), devices=30, days=0.75 / 24, start=start)
    replayed = run_recording(path, pre.truth, cfg())
    assert replayed.broker_events == 2
    assert [(a.detector, a.start, a.names) for a in replayed.alerts] == [
        (a.detector, a.start, a.names) for a in simulated.alerts
    ]
    assert score([replayed.outcome()]).kinds["mqtt_reconnaissance"].recall == 1.0


def test_broker_events_from_a_file_cannot_break_the_analysis() -> None:
    """Recordings are untrusted: a bad address or an unknown event is counted and skipped."""
    fleet = build_fleet(10, 0)
    t = BrokerTraffic(cfg().traffic, fleet_inventory(fleet))
    t.add(1.0, {"event": "connect_refused", "src_ip": "not-an-ip", "username": "u"})
    t.add(1.0, {"event": "subscribe", "src_ip": "10.0.0.1", "client_id": "c"})  # no topic
    t.add(1.0, {"event": "shutdown", "src_ip": "10.0.0.1"})
    t.add(1.0, {"event": "connect", "src_ip": None, "client_id": "x" * 100_000})
    assert t.counts == {"bad_address": 2, "bad_event": 1, "unknown_event": 1}
    assert not t.active
