"""The scenario library: every file loads and compiles; its truth is what the stream shows."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from simulators.anomalies import GroundTruth
from simulators.effects import StreamPlan
from simulators.fleet import build_fleet
from simulators.messages import Message
from simulators.scenario import (
    Compiled,
    ScenarioError,
    compile_scenario,
    library,
    load_scenario,
    parse_duration,
    scenario_start,
)
from simulators.scenario_run import ScenarioRun, prepare
from tests.test_simulators import check_message

ATTACKS = {
    "mirai_recruitment",
    "ddos_participation",
    "video_exfiltration",
    "impersonation",
    "rogue_device",
    "mqtt_bruteforce",
    "mqtt_reconnaissance",
    "command_abuse",
    "tampering_impossible_values",
    "tampering_replay",
    "tampering_drift",
    "firmware_change",
    "camera_sabotage",
}
BENIGN = {"power_cut", "maintenance_window", "firmware_rollout", "festival_night", "dst_change"}


def test_library_covers_the_issue() -> None:
    kinds: dict[str, set[str]] = defaultdict(set)
    for name in library():
        sc = load_scenario(name)
        for ev in sc.events:
            kinds[ev.label].add(ev.kind)
    assert kinds["attack"] >= ATTACKS
    assert kinds["benign"] == BENIGN


def test_durations() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("2h30m") == 9_000
    assert parse_duration("1d") == 86_400
    assert parse_duration(12) == 12
    for bad in ("", "soon", "-5m", "5 minutes"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_invalid_scenarios_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'name = "bad"\n[[events]]\nkind = "x"\nduration = "1h"\n'
        '[[events.effects]]\ntype = "scale"\nmetrics = {}\n'
    )
    with pytest.raises(ScenarioError, match=r"events\[0\]\.effects\[0\]"):
        load_scenario(path)
    path.write_text('name = "bad"\n[[events]]\nkind = "x"\nduration = "soon"\n')
    with pytest.raises(ScenarioError, match=r"events\[0\]\.duration"):
        load_scenario(path)
    path.write_text('name = "bad"\n[[events]]\nkind = "x"\nduration = "1h"\nwhat = 1\n')
    with pytest.raises(ScenarioError, match="what"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="no scenario"):
        load_scenario("no-such-scenario")


def test_a_new_scenario_is_only_a_file(tmp_path: Path) -> None:
    path = tmp_path / "lamp-heat.toml"
    path.write_text(
        'name = "lamp-heat"\n'
        '[[events]]\nkind = "driver_overheat"\nat = "20:00"\nduration = "30m"\n'
        'targets = { kind = "lighting", count = 2 }\n'
        '[[events.effects]]\ntype = "add"\nmetrics = { driver_temp_c = [60, 70] }\n'
    )
    run = prepare(load_scenario(path), devices=40, days=1)
    (truth,) = run.truth
    assert truth.kind == "driver_overheat"
    assert len(truth.devices) == 2
    hot = {
        m.device_id
        for m in run.messages()
        if m.topic.endswith("/telemetry")
        and orjson.loads(m.payload)["metrics"].get("driver_temp_c", 0) > 55
    }
    assert hot == set(truth.devices)


def _short(name: str, devices: int = 60) -> ScenarioRun:
    """The scenario on a small fleet, over a span around its events (at most ~3 h)."""
    sc = load_scenario(name)
    fleet = build_fleet(devices, sc.run.seed)
    nominal = compile_scenario(sc, fleet, scenario_start(sc), scenario_start(sc) + 86_400, 0)
    first = min(t.start for t in nominal.truth)
    return prepare(sc, devices=devices, start=first - 600, days=3 * 3600 / 86_400)


def _telemetry(messages: list[Message]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    out: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for m in messages:
        if m.topic.endswith("/telemetry"):
            p = orjson.loads(m.payload)
            out[m.device_id, p["seq"]].append(p)
    return out


@pytest.mark.parametrize("name", library())
def test_ground_truth_matches_the_stream(name: str) -> None:
    """Compared with the same fleet without the scenario, every difference in the stream is on
    a labelled device at or after its event's start, and every event (but the DST change,
    which changes nothing but the clocks' meaning) leaves a trace on its devices."""
    run = _short(name)
    assert run.truth, run.compiled.skipped
    plain = ScenarioRun(
        run.scenario,
        run.fleet,
        run.start,
        run.end,
        run.seed,
        run.prefix,
        Compiled(run.scenario, StreamPlan(), ()),
    )
    attacked = list(run.messages())
    baseline = list(plain.messages())
    assert [m.ts for m in attacked] == sorted(m.ts for m in attacked)
    for m in attacked:
        if m.origin == "will":
            assert (m.payload, m.retain) == (b"offline", True)
        elif m.topic.endswith("/command"):
            assert m.origin.startswith("operator:")
        else:
            check_message(m, healthy=False)

    starts: dict[str, float] = {}
    for t in run.truth:
        for d in t.devices:
            starts[d] = min(starts.get(d, t.start), t.start)
    base, seen = _telemetry(baseline), _telemetry(attacked)
    touched: set[str] = set()
    for key in base.keys() | seen.keys():
        if base.get(key) != seen.get(key):
            device = key[0]
            assert device in starts, (name, key)
            ts = (seen.get(key) or base[key])[0]["ts"]
            assert ts >= starts[device] - 1, (name, key)
            touched.add(device)
    other = {(m.topic, m.payload) for m in attacked if not m.topic.endswith("/telemetry")}
    other -= {(m.topic, m.payload) for m in baseline if not m.topic.endswith("/telemetry")}
    touched |= {topic.split("/")[-2] for topic, _ in other}
    actions = run.compiled.plan.actions
    for t in run.truth:
        if t.kind == "dst_change":
            continue
        if t.kind in ("mqtt_bruteforce", "mqtt_reconnaissance"):
            assert any(t.start <= a.ts <= t.end for a in actions)
            continue
        assert touched & set(t.devices), (name, t.kind)


def _payloads(run: ScenarioRun, device: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(m.payload)
        for m in run.messages()
        if m.device_id == device and m.topic.endswith("/telemetry")
    ]


def _inside(t: GroundTruth, ts: float) -> bool:
    return t.start <= ts < t.end


def test_mirai_scans_telnet_only_inside_the_window() -> None:
    run = _short("mirai-recruitment")
    (t,) = run.truth
    for m in run.messages():
        if m.topic.endswith("/telemetry"):
            p = orjson.loads(m.payload)
            if p["metrics"]["net_telnet_attempts"] > 0:
                assert m.device_id in t.devices
                assert _inside(t, p["ts"])
    # The worm spreads: each camera starts later than the one before it.
    firsts = [
        min(p["ts"] for p in _payloads(run, d) if p["metrics"]["net_telnet_attempts"] > 0)
        for d in t.devices
    ]
    assert firsts == sorted(firsts)


def test_sabotage_darkens_cameras_not_lights() -> None:
    run = _short("camera-sabotage")
    (t,) = run.truth
    zone = t.zones[0].split("/")[1]
    cams = set(t.devices)
    assert {run.fleet.get(d).kind for d in cams} == {"video"}
    assert cams == {d.device_id for d in run.fleet if d.kind == "video" and d.zone == zone}
    reporting: dict[str, int] = defaultdict(int)
    wills = set()
    for m in run.messages():
        if m.topic.endswith("/status") and m.payload == b"offline":
            wills.add(m.device_id)
        elif m.topic.endswith("/telemetry") and _inside(t, orjson.loads(m.payload)["ts"]):
            reporting[m.device_id] += 1
    assert wills == cams
    assert not cams & set(reporting)
    lights = [d.device_id for d in run.fleet if d.zone == zone and d.kind == "lighting"]
    assert lights
    assert all(reporting[d] > 0 for d in lights)


def test_rogue_device_is_not_in_the_inventory() -> None:
    run = _short("rogue-device")
    (t,) = run.truth
    (rogue,) = t.devices
    with pytest.raises(KeyError):
        run.fleet.get(rogue)
    seen = _payloads(run, rogue)
    assert seen
    assert all(_inside(t, p["ts"]) for p in seen)
    assert seen[0]["info"]["src_ip"].startswith("10.250.")


def test_tampering_shows_in_values_sequence_and_drift() -> None:
    run = prepare(load_scenario("telemetry-tampering"), devices=40, days=1)
    by_kind = {t.kind: t for t in run.truth}
    imp = by_kind["tampering_impossible_values"]
    speeds = [
        p["metrics"]["speed_kmh"] for p in _payloads(run, imp.devices[0]) if _inside(imp, p["ts"])
    ]
    assert speeds
    assert min(speeds) >= 380
    rep = by_kind["tampering_replay"]
    seqs = [p["seq"] for p in _payloads(run, rep.devices[0]) if p["ts"] >= rep.start - 3600]
    assert len(seqs) > len(set(seqs))  # old reports sent again
    drift = by_kind["tampering_drift"]
    base = prepare(load_scenario("benign-dst-change"), devices=40, days=1, start=run.start)
    honest = {p["seq"]: p["metrics"]["vehicles"] for p in _payloads(base, drift.devices[0])}
    late = [
        (p["metrics"]["vehicles"], honest[p["seq"]])
        for p in _payloads(run, drift.devices[0])
        if drift.end - 3 * 3600 < p["ts"] < drift.end and p["seq"] in honest
    ]
    assert late
    assert sum(v for v, _ in late) > 1.25 * sum(h for _, h in late)  # +36..48 %


def test_impersonation_has_two_publishers_on_one_topic() -> None:
    run = _short("impersonation")
    forged = next(t for t in run.truth if "second publisher" in t.detail)
    payloads = _payloads(run, forged.devices[0])
    by_seq: dict[int, set[str]] = defaultdict(set)
    for p in payloads:
        by_seq[p["seq"]].add(p["info"]["client_id"])
    doubled = [s for s, ids in by_seq.items() if len(ids) == 2]
    assert doubled
    assert all({forged.devices[0], forged.devices[0] + "-x"} == by_seq[s] for s in doubled)


def test_command_abuse_sends_commands_to_every_light_of_the_zone() -> None:
    run = _short("command-abuse")
    (t,) = run.truth
    commands = [m for m in run.messages() if m.topic.endswith("/command")]
    assert {m.device_id for m in commands} == set(t.devices)
    assert {m.origin for m in commands} == {"operator:mobile-7f3a"}
    assert all(orjson.loads(m.payload)["dim_pct"] == 0 for m in commands)


def test_firmware_change_changes_info_and_uptime() -> None:
    run = _short("firmware-change")
    (t,) = run.truth
    after = [p for p in _payloads(run, t.devices[0]) if p["ts"] > t.start + 300]
    assert after
    assert {p["info"]["firmware"] for p in after} == {"5.7.3-p1"}
    assert after[0]["metrics"]["uptime_s"] < 600


def test_broker_actions_without_a_broker_become_events() -> None:
    run = _short("mqtt-bruteforce")
    actions = run.compiled.plan.actions
    assert len(actions) == 600
    events = [e for a in actions for e in a.events()]
    assert {e["event"] for e in events} == {"connect_refused"}
    (t,) = run.truth
    tried = {e["username"] for e in events}
    assert set(t.devices) <= tried
    assert {"admin", "root"} <= tried
    recon = _short("mqtt-reconnaissance")
    (sub,) = recon.compiled.plan.actions
    assert {e["topic"] for e in sub.events()} == {"#", "$SYS/#"}


def test_same_seed_same_scenario_stream() -> None:
    a = _short("video-exfiltration", devices=30)
    b = _short("video-exfiltration", devices=30)
    assert a.truth == b.truth
    assert list(a.messages()) == list(b.messages())
    c = prepare(a.scenario, devices=30, seed=5, start=a.start, days=(a.end - a.start) / 86_400)
    assert c.truth != a.truth or list(c.messages()) != list(a.messages())
