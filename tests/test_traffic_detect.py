"""Detections on captures generated with scapy: one per attack, each over a benign background.

Every test states the exact alerts expected as (kind, subject, count): nothing more may fire.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from sentinel.traffic import Analysis, TrafficConfig, analyze_file, load_inventory
from sentinel.traffic.cli import app as pcap_app
from sentinel.traffic.synth import (
    Capture,
    TcpConn,
    dns_query,
    mqtt_connack,
    mqtt_connect,
    mqtt_control,
    mqtt_publish,
    mqtt_subscribe,
)

T0 = 1_764_374_400.0  # a multiple of 60: windows start on whole minutes
BROKER, RESOLVER, UPDATES = "10.0.0.1", "10.0.0.53", "10.0.0.20"
DEVICES = {"dev-1": ("10.0.1.1", "lighting"), "dev-2": ("10.0.1.2", "video")}
DEVICES["dev-3"] = ("10.0.1.3", "mobility")
# Flow detections need a learning period and a baseline inside a short capture.
FLOW_CONFIG = TrafficConfig(learning_s=120)

Expected = set[tuple[str, str, int]]


def topic(device: str, leaf: str) -> str:
    return f"fleet/lyon/part-dieu/{DEVICES[device][1]}/{device}/{leaf}"


def mqtt_session(
    cap: Capture,
    ip: str,
    sport: int,
    ts: float,
    client_id: str,
    username: str | None,
    *,
    code: int = 0,
    keep_alive: int = 60,
    will: tuple[str, bool] | None = None,
) -> TcpConn:
    conn = cap.tcp(ip, BROKER, sport, ts=ts)
    hello = mqtt_connect(client_id, username, "pw", keep_alive=keep_alive, will=will)
    conn.exchange(ts + 0.01, hello, mqtt_connack(code))
    return conn


def background(cap: Capture, seconds: float) -> None:
    """A quiet fleet: devices, the agent, an operator and the simulator's gateway."""
    agent = mqtt_session(cap, "10.0.0.9", 50001, T0, "agent", "sentinel-agent")
    agent.exchange(T0 + 0.1, mqtt_subscribe("fleet/#", "$SYS/#"))
    gateway = mqtt_session(cap, "10.0.0.8", 50002, T0, "sim-gw", "sentinel-sim")
    gateway.exchange(T0 + 0.1, mqtt_subscribe("fleet/+/+/+/+/command"))
    for i in range(50):
        gateway.send(T0 + 1 + i * 0.1, mqtt_publish(f"fleet/lyon/x/video/sim-{i}/telemetry", b"{}"))
    operator = mqtt_session(cap, "10.0.0.10", 50003, T0, "console", "sentinel-operator")
    operator.exchange(T0 + 0.2, mqtt_subscribe("fleet/#", "sentinel/alerts/#"))
    operator.exchange(T0 + 30, mqtt_publish(topic("dev-1", "command"), b'{"dim": 40}', qos=1))
    for n, (dev, (ip, _)) in enumerate(DEVICES.items()):
        start = T0 + n
        cap.udp(start, ip, 40000 + n, RESOLVER, 53, dns_query("broker.lyon.example"))
        update = cap.tcp(ip, UPDATES, 41000 + n, 443, ts=start + 0.5)
        update.exchange(start + 0.6, b"\x16\x03\x01" + bytes(300), b"\x16\x03\x03" + bytes(900))
        update.close(start + 0.7)
        status = (topic(dev, "status"), True)
        conn = mqtt_session(cap, ip, 42000 + n, start + 1, dev, dev, will=status)
        conn.send(start + 1.1, mqtt_publish(status[0], b"online", retain=True))
        conn.exchange(start + 1.2, mqtt_subscribe(topic(dev, "command")))
        if dev == "dev-1":
            conn.send(T0 + 30.01, mqtt_publish(topic(dev, "command"), b"{}", qos=1), False)
        t = start + 5.0
        while t < T0 + seconds:
            body = b'{"ts": %d, "metrics": {"x": 1.5}}' % t
            conn.exchange(
                t, mqtt_publish(topic(dev, "telemetry"), body, qos=1), b"\x40\x02\x00\x01"
            )
            t += 10.0
        cap.udp(T0 + seconds - 5, ip, 40100 + n, RESOLVER, 53, dns_query("ntp.lyon.example"))


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.json"
    devices = [
        {"device_id": d, "ip": ip, "kind": kind, "tenant": "lyon", "zone": "part-dieu", "x": 1}
        for d, (ip, kind) in DEVICES.items()
    ]
    path.write_bytes(orjson.dumps(devices))
    return path


def run(
    tmp_path: Path,
    inventory: Path | None,
    attack: Callable[[Capture], None],
    *,
    seconds: float = 120,
    config: TrafficConfig | None = None,
) -> Analysis:
    cap = Capture()
    background(cap, seconds)
    attack(cap)
    path = cap.write(tmp_path / "capture.pcap")
    devices = load_inventory(inventory) if inventory else None
    return analyze_file(path, config, devices)


def found(analysis: Analysis) -> Expected:
    return {(a.kind, a.subject, a.count) for a in analysis.alerts}


# --- benign -----------------------------------------------------------------------------------


def test_benign_fleet_raises_nothing(tmp_path: Path, inventory: Path) -> None:
    analysis = run(tmp_path, inventory, lambda cap: None, seconds=900, config=FLOW_CONFIG)
    assert found(analysis) == set()
    s = analysis.summary
    assert s.parse_errors == 0
    assert s.reassembly_gaps == 0
    assert s.mqtt_streams == 6
    assert s.tcp_streams == 9
    assert s.mqtt_by_type["CONNECT"] == 6
    assert s.mqtt_by_type["SUBSCRIBE"] == 6
    assert s.dns_queries == 6
    dev1 = [f for f in analysis.features if f.device and f.device.device_id == "dev-1"]
    assert len(dev1) == 15  # one per minute of the capture
    assert dev1[0].dns_names == ("broker.lyon.example",)
    assert dev1[0].connections == 2
    assert dev1[0].dst_ips == 3
    assert dev1[0].new_dsts == 3
    assert dev1[-1].dns_names == ("ntp.lyon.example",)
    assert dev1[-1].new_dsts == 0
    record = dev1[0].to_record()
    assert record is not None
    assert record.device.tenant == "lyon"
    assert record.metrics["dst_ports"] == 3.0  # 53, 443, 1883


def test_benign_without_inventory_raises_nothing(tmp_path: Path) -> None:
    analysis = run(tmp_path, None, lambda cap: None, seconds=900, config=FLOW_CONFIG)
    assert found(analysis) == set()
    assert analysis.summary.hosts == 9  # every IP is a host without an inventory


# --- MQTT attacks -----------------------------------------------------------------------------


def test_credential_brute_force(tmp_path: Path, inventory: Path) -> None:
    def attack(cap: Capture) -> None:
        for i in range(12):
            mqtt_session(cap, "10.6.6.6", 30000 + i, T0 + 20 + i, f"x{i}", "admin", code=5)

    analysis = run(tmp_path, inventory, attack)
    assert found(analysis) == {
        ("brute_force_ip", "10.6.6.6", 12),
        ("brute_force_user", "admin", 12),
    }
    by_ip = next(a for a in analysis.alerts if a.kind == "brute_force_ip")
    assert (by_ip.first, by_ip.src, by_ip.device) == (T0 + 20.0105, "10.6.6.6", None)
    assert by_ip.evidence["usernames"] == "admin"
    assert by_ip.evidence["last_code"] == 5
    assert by_ip.severity == "critical"


def test_reconnect_storm(tmp_path: Path, inventory: Path) -> None:
    def attack(cap: Capture) -> None:
        for i in range(25):
            conn = mqtt_session(cap, "10.0.1.2", 31000 + i, T0 + 70 + 2 * i, "dev-2", "dev-2")
            conn.send(T0 + 70.5 + 2 * i, mqtt_control(14))
            conn.close(T0 + 70.6 + 2 * i)

    analysis = run(tmp_path, inventory, attack)
    assert found(analysis) == {("reconnect_storm", "dev-2", 25)}
    alert = analysis.alerts[0]
    assert alert.device is not None
    assert alert.device.device_id == "dev-2"


def test_one_client_id_from_two_ips(tmp_path: Path, inventory: Path) -> None:
    def attack(cap: Capture) -> None:
        mqtt_session(cap, "10.9.9.9", 32000, T0 + 20, "dev-1", "dev-1")

    analysis = run(tmp_path, inventory, attack)
    assert found(analysis) == {("client_id_multi_ip", "dev-1", 2)}
    assert analysis.alerts[0].evidence["ips"] == "10.0.1.1,10.9.9.9"


def test_field_device_subscribing_beyond_its_topics(tmp_path: Path, inventory: Path) -> None:
    def attack(cap: Capture) -> None:
        conn = mqtt_session(cap, "10.0.1.3", 33000, T0 + 40, "dev-3-b", "dev-3")
        other = topic("dev-2", "command")
        conn.exchange(T0 + 41, mqtt_subscribe("#", "$SYS/#", other, topic("dev-3", "command")))

    analysis = run(tmp_path, inventory, attack)
    assert found(analysis) == {("forbidden_subscription", "dev-3-b", 3)}
    evidence = analysis.alerts[0].evidence
    assert evidence["reason"] == "all_topics,broker_internals,other_devices"
    assert evidence["username"] == "dev-3"


def test_command_publish_by_non_operators(tmp_path: Path, inventory: Path) -> None:
    def attack(cap: Capture) -> None:
        conn = mqtt_session(cap, "10.0.1.3", 34000, T0 + 40, "dev-3-c", "dev-3")
        conn.exchange(T0 + 41, mqtt_publish(topic("dev-1", "command"), b'{"on": 0}', qos=1))
        gateway = mqtt_session(cap, "10.0.0.8", 34001, T0 + 50, "sim-2", "sentinel-sim")
        gateway.send(T0 + 51, mqtt_publish(topic("dev-2", "command"), b"{}"))

    analysis = run(tmp_path, inventory, attack)
    assert found(analysis) == {("command_publish", "dev-3-c", 1), ("command_publish", "sim-2", 1)}


def test_retained_and_will_abuse(tmp_path: Path, inventory: Path) -> None:
    def attack(cap: Capture) -> None:
        will = (topic("dev-2", "telemetry"), True)
        conn = mqtt_session(cap, "10.0.1.2", 35000, T0 + 40, "dev-2", "dev-2", will=will)
        for i in range(3):
            conn.send(T0 + 41 + i, mqtt_publish(topic("dev-2", "telemetry"), b"{}", retain=True))

    analysis = run(tmp_path, inventory, attack)
    assert found(analysis) == {("retained_abuse", "dev-2", 4)}


def test_oversized_payloads(tmp_path: Path, inventory: Path) -> None:
    def attack(cap: Capture) -> None:
        conn = mqtt_session(cap, "10.0.1.1", 36000, T0 + 40, "dev-1-big", "dev-1")
        # 100 kB: more than the framer buffers, so parsed from its head and the rest skipped.
        conn.send(T0 + 41, mqtt_publish(topic("dev-1", "telemetry"), bytes(100_000)))
        conn.send(T0 + 42, mqtt_publish(topic("dev-1", "telemetry"), bytes(5000), qos=1))
        conn.send(T0 + 43, mqtt_publish(topic("dev-1", "telemetry"), bytes(4096)))

    analysis = run(tmp_path, inventory, attack)
    assert found(analysis) == {("oversized_payload", "dev-1-big", 2)}
    assert analysis.alerts[0].evidence["payload_bytes"] == 5000
    assert analysis.summary.parse_errors == 0


def test_malformed_packets(tmp_path: Path, inventory: Path) -> None:
    def attack(cap: Capture) -> None:
        early = cap.tcp("10.7.7.7", BROKER, 37000, ts=T0 + 40)
        early.send(T0 + 40.1, mqtt_publish(topic("dev-1", "telemetry"), b"{}"))
        conn = mqtt_session(cap, "10.7.7.7", 37001, T0 + 41, "fuzz", "dev-1")
        conn.send(T0 + 42, b"\x36\x05\x00\x01a\x00\x01")  # PUBLISH with QoS 3
        conn.send(T0 + 43, b"\x00\x00")  # packet type 0
        conn.send(T0 + 44, b"\x80\x06\x00\x01\x00\x01#\x00")  # SUBSCRIBE with flags 0000
        conn.send(T0 + 45, b"\x30\xff\xff\xff\xff\x01")  # remaining length on 5 bytes
        conn.send(T0 + 46, mqtt_publish(topic("dev-1", "telemetry"), b"{}"))  # framing lost

    analysis = run(tmp_path, inventory, attack)
    assert found(analysis) == {("malformed_packets", "10.7.7.7", 5)}
    evidence = analysis.alerts[0].evidence
    for reason in (
        "before_connect",
        "invalid_qos",
        "unknown_type",
        "reserved_flags",
        "bad_remaining_length",
    ):
        assert evidence[reason] == 1
    assert analysis.summary.parse_errors == 5


def test_slowite(tmp_path: Path, inventory: Path) -> None:
    def attack(cap: Capture) -> None:
        for i in range(12):
            mqtt_session(
                cap, "10.8.8.8", 38000 + i, T0 + 30 + i, f"slow-{i}", None, keep_alive=65535
            )

    analysis = run(tmp_path, inventory, attack)
    assert found(analysis) == {("slowite", "10.8.8.8", 12)}
    assert analysis.alerts[0].evidence["keep_alive_s"] == 65535


def test_publish_flood(tmp_path: Path, inventory: Path) -> None:
    def attack(cap: Capture) -> None:
        conn = mqtt_session(cap, "10.0.1.2", 39000, T0 + 30, "flooder", "dev-2")
        for i in range(700):
            conn.send(T0 + 31 + i * 0.04, mqtt_publish(topic("dev-2", "telemetry"), b"{}"))

    analysis = run(tmp_path, inventory, attack)
    assert found(analysis) == {("publish_flood", "flooder", 700)}


# --- flow attacks -----------------------------------------------------------------------------


def test_telnet_and_ssh_scanning(tmp_path: Path, inventory: Path) -> None:
    def attack(cap: Capture) -> None:
        for i in range(25):
            port = 22 if i < 5 else (23 if i % 2 else 2323)
            target = cap.tcp(
                "10.0.1.2", f"198.51.100.{i + 1}", 45000 + i, port, ts=0, handshake=False
            )
            target.syn(T0 + 400 + i * 0.1)  # unanswered, as most scan probes are

    analysis = run(tmp_path, inventory, attack, seconds=600, config=FLOW_CONFIG)
    assert found(analysis) == {("telnet_ssh_scan", "10.0.1.2", 25)}
    alert = analysis.alerts[0]
    assert (alert.first, alert.last) == (T0 + 360, T0 + 420)
    assert (alert.evidence["ssh"], alert.evidence["telnet"]) == (5, 20)


def test_new_c2_like_destination(tmp_path: Path, inventory: Path) -> None:
    def attack(cap: Capture) -> None:
        cap.udp(T0 + 399, "10.0.1.1", 40200, RESOLVER, 53, dns_query("c2.evil.example"))
        conn = cap.tcp("10.0.1.1", "203.0.113.66", 46000, 4444, ts=T0 + 400)
        conn.exchange(T0 + 401, b"hello", b"orders")

    analysis = run(tmp_path, inventory, attack, seconds=600, config=FLOW_CONFIG)
    assert found(analysis) == {("new_destination", "10.0.1.1", 1)}
    assert analysis.alerts[0].evidence["destinations"] == "203.0.113.66:4444"
    window = next(f for f in analysis.features if f.ip == "10.0.1.1" and f.start == T0 + 360)
    assert window.dns_names == ("c2.evil.example",)
    assert window.new_dsts == 1


def test_volume_anomaly(tmp_path: Path, inventory: Path) -> None:
    def attack(cap: Capture) -> None:
        conn = cap.tcp("10.0.1.2", UPDATES, 47000, 443, ts=T0 + 400)
        conn.send(T0 + 401, bytes(2_000_000))

    analysis = run(tmp_path, inventory, attack, seconds=600, config=FLOW_CONFIG)
    assert found(analysis) == {("volume_anomaly", "10.0.1.2", 1)}
    assert int(str(analysis.alerts[0].evidence["bytes_out"])) > 2_000_000


# --- the command ------------------------------------------------------------------------------


def _attack_capture(tmp_path: Path) -> Path:
    cap = Capture()
    background(cap, 60)
    for i in range(10):
        mqtt_session(cap, "10.6.6.6", 30000 + i, T0 + 20 + i, f"x{i}", "admin", code=4)
    return cap.write(tmp_path / "attack.pcapng", "pcapng")


def _cli() -> typer.Typer:
    """The sub-application mounted as `sentinel pcap` would be."""
    root = typer.Typer()

    @root.command()
    def version() -> None:
        pass

    root.add_typer(pcap_app, name="pcap")
    return root


def test_cli_json_lines(tmp_path: Path, inventory: Path) -> None:
    path = _attack_capture(tmp_path)
    features = tmp_path / "features.jsonl"
    args = ["pcap", "analyze", str(path), "--inventory", str(inventory), "--json"]
    result = CliRunner().invoke(_cli(), [*args, "--features", str(features)])
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [(x["type"], x.get("kind")) for x in lines] == [
        ("alert", "brute_force_ip"),
        ("alert", "brute_force_user"),
        ("summary", None),
    ]
    summary = lines[-1]
    assert summary["alerts_by_kind"] == {"brute_force_ip": 1, "brute_force_user": 1}
    assert summary["mqtt_streams"] == 16
    assert summary["parse_errors"] == 0
    rows = [orjson.loads(line) for line in features.read_text().splitlines()]
    assert {r["device_id"] for r in rows} == {"dev-1", "dev-2", "dev-3"}


def test_cli_table(tmp_path: Path) -> None:
    path = _attack_capture(tmp_path)
    result = CliRunner().invoke(_cli(), ["pcap", "analyze", str(path)])
    assert result.exit_code == 0, result.output
    assert "brute_force_user" in result.stdout
    assert "MQTT streams" in result.stdout


def test_cli_config_thresholds(tmp_path: Path) -> None:
    path = _attack_capture(tmp_path)
    config = tmp_path / "sentinel.toml"
    config.write_text("[traffic]\nbrute_force_failures = 11\n")
    result = CliRunner().invoke(_cli(), ["pcap", "analyze", str(path), "-c", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout.splitlines()[-1])["alerts"] == 0
    config.write_text("[traffic]\nbrute_force_failure = 11\n")
    result = CliRunner().invoke(_cli(), ["pcap", "analyze", str(path), "-c", str(config)])
    assert result.exit_code == 2
    assert "traffic.brute_force_failure: Extra inputs are not permitted" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "cannot read"),
        (b"GIF89a" + bytes(40), "not a pcap or pcapng file"),
        (b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00" + bytes(12) + b"\x93\x00\x00\x00", "link type 147"),
    ],
)
def test_cli_unreadable_capture(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    result = CliRunner().invoke(_cli(), ["pcap", "analyze", str(path)])
    assert result.exit_code == 2
    assert message in result.stderr


def test_cli_bad_inventory(tmp_path: Path) -> None:
    path = _attack_capture(tmp_path)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(
        '[{"device_id": "a", "ip": "not-an-ip", "kind": "video", "tenant": "t", "zone": "z"}]'
    )
    result = CliRunner().invoke(_cli(), ["pcap", "analyze", str(path), "-i", str(inventory)])
    assert result.exit_code == 2
    assert "'not-an-ip' is not an IP" in result.stderr
