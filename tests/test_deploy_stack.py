"""The local stack (deploy/local/stack): rendered configs, and the real running services.

All tests here are marked ``stack``: the render test needs the Debian binaries (mosquitto_passwd,
promtool, amtool, influxd); the others use the stack described by ``$STACK_DIR/stack.env`` and
expect ``deploy/local/stack up`` to have run (skipped otherwise, failed with STACK_REQUIRED=1).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import shutil
import socket
import ssl
import stat
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.stack_env import (
    REPO_ROOT,
    STACK_SCRIPT,
    host_port,
    mqtt_tls_context,
    require_stack,
    secret,
)

pytestmark = pytest.mark.stack

DEPLOY = REPO_ROOT / "deploy"
ALT_PORTS = {
    "STACK_MQTT_PORT": "28830",
    "STACK_MQTTS_PORT": "28883",
    "STACK_INFLUX_PORT": "28086",
    "STACK_INFLUX_RPC_PORT": "28088",
    "STACK_PROM_PORT": "29090",
    "STACK_AM_PORT": "29093",
    "STACK_AGENT_PORT": "29108",
}
SECRET_NAMES = {
    "mqtt-agent",
    "mqtt-sim",
    "mqtt-operator",
    "influx-admin",
    "influx-agent",
    "influx-grafana",
    "agent-api",
    "grafana-admin",
    "mqtt-probe-dev-1",
    "mqtt-probe-dev-2",
}
MQTT_USERS = {
    "sentinel-agent",
    "sentinel-sim",
    "sentinel-operator",
    "probe-dev-1",
    "probe-dev-2",
}


def need_binaries(*names: str) -> None:
    missing = [n for n in names if shutil.which(n, path=os.environ["PATH"] + ":/usr/sbin") is None]
    if not missing:
        return
    reason = f"missing {', '.join(missing)}: run deploy/local/stack up (installs them as root)"
    if os.environ.get("STACK_REQUIRED") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- render into a temporary STACK_DIR -----------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    need_binaries("mosquitto_passwd", "openssl")
    stack_dir = tmp_path_factory.mktemp("stack") / "st"
    env = {**os.environ, "STACK_DIR": str(stack_dir), **ALT_PORTS}
    proc = run(STACK_SCRIPT, "render", env=env)
    assert proc.returncode == 0, proc.stderr
    return stack_dir, proc.stdout + proc.stderr


def secrets_of(stack_dir: Path) -> dict[str, str]:
    return {
        p.stem: p.read_text(encoding="utf-8").strip()
        for p in (stack_dir / "secrets").glob("*.password")
    }


def test_render_creates_private_random_secrets(rendered: tuple[Path, str]) -> None:
    stack_dir, output = rendered
    secrets_dir = stack_dir / "secrets"
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    values = secrets_of(stack_dir)
    assert set(values) == SECRET_NAMES
    assert len(set(values.values())) == len(values)
    for name, value in values.items():
        assert re.fullmatch(r"[A-Za-z0-9_-]{24,}", value), name
        assert value not in output, f"render printed secret {name}"
    for path in secrets_dir.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {oct(mode)}"


def test_render_leaks_no_secret_into_other_files(rendered: tuple[Path, str]) -> None:
    stack_dir, _ = rendered
    values = secrets_of(stack_dir)
    secrets_dir = stack_dir / "secrets"
    checked = 0
    for path in stack_dir.rglob("*"):
        if not path.is_file() or path.is_relative_to(secrets_dir):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for name, value in values.items():
            assert value not in text, f"secret {name} found in {path}"
        checked += 1
    assert checked >= 7


def test_mosquitto_passwd_holds_hashes_only(rendered: tuple[Path, str]) -> None:
    stack_dir, _ = rendered
    passwd = stack_dir / "mosquitto" / "passwd"
    assert stat.S_IMODE(passwd.stat().st_mode) == 0o600
    users = {}
    for line in passwd.read_text(encoding="utf-8").splitlines():
        user, _, hashed = line.partition(":")
        assert hashed.startswith("$7$"), f"{user}: not a mosquitto 2.0 PBKDF2 hash"
        users[user] = hashed
    assert set(users) == MQTT_USERS
    if os.geteuid() == 0 and shutil.which("id"):
        owner = run("stat", "-c", "%U", passwd).stdout.strip()
        assert owner == "mosquitto", "the broker (dropped to mosquitto) must read its passwd"


def test_render_substitutes_ports_and_paths(rendered: tuple[Path, str]) -> None:
    stack_dir, _ = rendered
    files = [p for p in stack_dir.rglob("*") if p.is_file() and "secrets" not in p.parts]
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        assert not re.search(r"@[A-Z_]+@", text), f"placeholder left in {path}"
    mosq = (stack_dir / "mosquitto" / "mosquitto.conf").read_text()
    assert "listener 28830 127.0.0.1" in mosq
    assert f"password_file {stack_dir}/mosquitto/passwd" in mosq
    assert "allow_anonymous false" in mosq
    tls_block = mosq.split("listener 28883 127.0.0.1\n", 1)[1]
    for line in (
        f"cafile {stack_dir}/tls/ca.crt",
        f"certfile {stack_dir}/tls/server.crt",
        f"keyfile {stack_dir}/tls/server.key",
        "tls_version tlsv1.2",
    ):
        assert f"\n{line}\n" in f"\n{tls_block}", line
    influx = (stack_dir / "influxdb" / "influxdb.conf").read_text()
    assert 'bind-address = "127.0.0.1:28086"' in influx
    assert 'bind-address = "127.0.0.1:28088"' in influx
    prom = (stack_dir / "prometheus" / "prometheus.yml").read_text()
    for address in ("127.0.0.1:29108", "127.0.0.1:29093", "127.0.0.1:29090"):
        assert address in prom
    env = dict(line.split("=", 1) for line in (stack_dir / "stack.env").read_text().splitlines())
    assert env["STACK_DIR"] == str(stack_dir)
    assert env["STACK_MQTT_URL"] == "mqtt://127.0.0.1:28830"
    assert env["STACK_MQTTS_URL"] == "mqtts://127.0.0.1:28883"
    assert env["STACK_CA_FILE"] == f"{stack_dir}/tls/ca.crt"
    assert env["STACK_INFLUX_URL"] == "http://127.0.0.1:28086"
    assert env["STACK_PROM_URL"] == "http://127.0.0.1:29090"
    assert env["STACK_AM_URL"] == "http://127.0.0.1:29093"
    for key, value in ALT_PORTS.items():
        assert env[key] == value


def test_render_is_idempotent(rendered: tuple[Path, str]) -> None:
    stack_dir, _ = rendered
    before = {
        p: (p.read_bytes(), p.stat().st_mtime_ns) for p in stack_dir.rglob("*") if p.is_file()
    }
    proc = run(STACK_SCRIPT, "render", env={**os.environ, "STACK_DIR": str(stack_dir), **ALT_PORTS})
    assert proc.returncode == 0, proc.stderr
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in stack_dir.rglob("*") if p.is_file()}
    assert after == before


# --- TLS material made by render -----------------------------------------------------------------


def openssl(*args: str | Path) -> str:
    proc = run("openssl", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def cert_days(path: Path) -> float:
    """The certificate's validity period, in days."""
    out = openssl("x509", "-in", path, "-noout", "-startdate", "-enddate")
    dates = dict(line.split("=", 1) for line in out.splitlines())
    fmt = "%b %d %H:%M:%S %Y %Z"
    start = time.mktime(time.strptime(" ".join(dates["notBefore"].split()), fmt))
    end = time.mktime(time.strptime(" ".join(dates["notAfter"].split()), fmt))
    return (end - start) / 86400


def test_render_makes_a_local_ca_and_the_broker_certificate(rendered: tuple[Path, str]) -> None:
    stack_dir, output = rendered
    tls = stack_dir / "tls"
    modes = {"ca.key": 0o600, "server.key": 0o600, "ca.crt": 0o644, "server.crt": 0o644}
    for name, mode in modes.items():
        assert stat.S_IMODE((tls / name).stat().st_mode) == mode, name
    if os.geteuid() == 0:
        # Only this script signs with the CA key; only the broker's user reads its own key.
        assert (tls / "ca.key").stat().st_uid == 0
        assert run("stat", "-c", "%U", tls / "server.key").stdout.strip() == "mosquitto"
    for key in ("ca.key", "server.key"):
        text = (tls / key).read_text(encoding="utf-8")
        body = "".join(text.splitlines()[1:-1])
        assert body, key
        assert body not in output.replace("\n", ""), f"render printed {key}"
        assert "prime256v1" in openssl("pkey", "-in", tls / key, "-noout", "-text"), key
    assert "server.crt: OK" in openssl("verify", "-CAfile", tls / "ca.crt", tls / "server.crt")
    ca = openssl("x509", "-in", tls / "ca.crt", "-noout", "-ext", "basicConstraints,keyUsage")
    assert "CA:TRUE" in ca
    assert "Certificate Sign" in ca
    server = openssl(
        "x509",
        "-in",
        tls / "server.crt",
        "-noout",
        "-ext",
        "basicConstraints,extendedKeyUsage,subjectAltName",
    )
    assert "CA:FALSE" in server
    assert "TLS Web Server Authentication" in server
    for name in ("DNS:localhost", "IP Address:127.0.0.1"):
        assert name in server
    assert 3000 < cert_days(tls / "ca.crt") <= 3660
    assert 365 <= cert_days(tls / "server.crt") <= 825


def test_tls_certificate_is_reissued_only_when_needed(tmp_path: Path) -> None:
    need_binaries("mosquitto_passwd", "openssl")
    env = {**os.environ, "STACK_DIR": str(tmp_path / "st"), **ALT_PORTS}
    assert run(STACK_SCRIPT, "render", env=env).returncode == 0
    tls = tmp_path / "st" / "tls"
    before = {p.name: p.read_bytes() for p in tls.iterdir()}
    proc = run(STACK_SCRIPT, "render", env={**env, "STACK_TLS_SAN": "DNS:mqtt.example.org"})
    assert proc.returncode == 0, proc.stderr
    assert "subjectAltName changed" in proc.stderr
    after = {p.name: p.read_bytes() for p in tls.iterdir()}
    for name in ("ca.crt", "ca.key", "server.key"):
        assert after[name] == before[name], f"{name} must be kept"
    assert after["server.crt"] != before["server.crt"]
    san = openssl("x509", "-in", tls / "server.crt", "-noout", "-ext", "subjectAltName")
    assert "DNS:mqtt.example.org" in san
    assert "IP Address:127.0.0.1" in san
    proc = run(STACK_SCRIPT, "render", env={**env, "STACK_TLS_SAN": "mqtt.example.org; rm -rf"})
    assert proc.returncode != 0
    assert "STACK_TLS_SAN must be" in proc.stderr


def test_production_config_is_the_tls_listener_alone() -> None:
    """Deleting the plain listener's one line leaves a broker that serves TLS only."""
    need_binaries("mosquitto", "mosquitto_passwd", "openssl")
    # Not pytest's tmp_path (0700): the broker drops to the mosquitto user, which must reach it.
    base = Path(tempfile.mkdtemp(prefix="sentinel-prodconf-"))
    base.chmod(0o755)
    stack_dir = base / "st"
    tls_port = free_port()
    env = {**os.environ, "STACK_DIR": str(stack_dir), **ALT_PORTS}
    broker: subprocess.Popen[str] | None = None
    try:
        assert run(STACK_SCRIPT, "render", env=env).returncode == 0
        conf = (stack_dir / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8")
        plain = f"listener {ALT_PORTS['STACK_MQTT_PORT']} 127.0.0.1\n"
        assert conf.count(plain) == 1
        prod = conf.replace(plain, "").replace(
            f"listener {ALT_PORTS['STACK_MQTTS_PORT']} ", f"listener {tls_port} "
        )
        assert len(prod.splitlines()) == len(conf.splitlines()) - 1
        prod_conf = stack_dir / "mosquitto" / "production.conf"
        prod_conf.write_text(prod, encoding="utf-8")
        broker = subprocess.Popen(
            ["mosquitto", "-c", str(prod_conf)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ctx = ssl.create_default_context(cafile=stack_dir / "tls" / "ca.crt")
        deadline = time.monotonic() + 10
        while True:
            assert broker.poll() is None, broker.communicate()[0]
            try:
                assert tls_handshake(("127.0.0.1", tls_port), ctx, "127.0.0.1") in TLS_VERSIONS
                break
            except OSError:
                assert time.monotonic() < deadline, "the TLS-only broker never answered"
                time.sleep(0.1)
        broker.terminate()
        log = broker.communicate(timeout=10)[0]
        assert re.findall(r"Opening \S+ listen socket on port (\d+)", log) == [str(tls_port)]
    finally:
        if broker is not None and broker.poll() is None:
            broker.kill()
            broker.wait()
        shutil.rmtree(base, ignore_errors=True)


def test_rendered_prometheus_config_and_rules_are_valid(rendered: tuple[Path, str]) -> None:
    need_binaries("promtool")
    stack_dir, _ = rendered
    proc = run("promtool", "check", "config", stack_dir / "prometheus" / "prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr
    rules = sorted((stack_dir / "prometheus" / "rules").glob("*.yml"))
    assert [r.name for r in rules] == sorted(
        p.name for p in (DEPLOY / "prometheus" / "rules").glob("*.yml")
    )
    proc = run("promtool", "check", "rules", *rules)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_rule_unit_tests() -> None:
    need_binaries("promtool")
    tests = sorted((DEPLOY / "prometheus" / "tests").glob("*.test.yml"))
    assert tests
    proc = run("promtool", "test", "rules", *tests)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Every alert rule has a unit test that expects it to fire.
    rules = {
        m
        for p in (DEPLOY / "prometheus" / "rules").glob("*.yml")
        for m in re.findall(r"^\s*- alert: (\w+)", p.read_text(encoding="utf-8"), re.M)
    }
    fired = {
        m
        for p in tests
        for m in re.findall(
            r"alertname: (\w+)\n\s*exp_alerts:\n\s*- exp_labels", p.read_text(encoding="utf-8")
        )
    }
    assert rules, "no alert rule found"
    assert rules <= fired, f"rules no test sees firing: {sorted(rules - fired)}"
    for p in (DEPLOY / "prometheus" / "rules").glob("*.yml"):
        assert p.read_text(encoding="utf-8").count("component: pipeline") == len(
            re.findall(r"^\s*- alert: ", p.read_text(encoding="utf-8"), re.M)
        ), f"{p.name}: every rule routes to sentinel-ops with component=pipeline"


AM_TENANTS = ("lyon", "villeurbanne", "venissieux")  # the simulated Métropole (simulators/)


def test_rendered_alertmanager_config_is_valid(rendered: tuple[Path, str]) -> None:
    """amtool check-config, then where alerts go: `amtool config routes test` per label set."""
    need_binaries("amtool")
    stack_dir, _ = rendered
    config = stack_dir / "alertmanager" / "alertmanager.yml"
    proc = run("amtool", "check-config", config)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    def receiver(*labels: str) -> str:
        proc = run("amtool", "config", "routes", "test", f"--config.file={config}", *labels)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout.strip()

    expected: dict[tuple[str, ...], str] = {}
    for tenant in AM_TENANTS:
        device = (f"tenant={tenant}", "zone=z1", "kind=video", "device_id=d1", "incident=i-1")
        expected[(*device, "severity=critical", "alertname=CameraUploadSurge")] = (
            f"{tenant}-critical"
        )
        expected[(*device, "severity=warning", "alertname=Seasonal")] = f"{tenant}-warning"
        expected[(*device, "severity=info", "alertname=Seasonal")] = tenant
        rollup = (f"tenant={tenant}", "zone=z1", "incident=i-2", "detector=x")
        expected[(*rollup, "alertname=SentinelIncidentRollup", "severity=critical")] = (
            f"{tenant}-critical"
        )
        campaign = (f"tenant={tenant}", "zone=_fleet", "incident=i-3", "detector=x")
        expected[(*campaign, "alertname=SentinelFleetIncident", "severity=warning")] = (
            f"{tenant}-warning"
        )
    expected[("tenant=elsewhere", "severity=critical", "alertname=X")] = "sentinel-critical"
    expected[("tenant=elsewhere", "severity=warning", "alertname=X")] = "sentinel-default"
    pipeline = ("component=pipeline", "job=sentinel-agent", "instance=127.0.0.1:19108")
    expected[(*pipeline, "alertname=SentinelAgentDown", "severity=critical")] = "sentinel-ops"
    expected[(*pipeline, "alertname=SentinelIngestStalled", "severity=warning")] = "sentinel-ops"
    got = {labels: receiver(*labels) for labels in expected}
    assert got == expected


def test_rendered_influxdb_config_parses_with_auth_on(rendered: tuple[Path, str]) -> None:
    need_binaries("influxd")
    stack_dir, _ = rendered
    proc = run("influxd", "config", "-config", stack_dir / "influxdb" / "influxdb.conf")
    assert proc.returncode == 0, proc.stderr
    merged = proc.stdout
    assert re.search(r"auth-enabled = true", merged)
    assert re.search(r"log-enabled = false", merged)
    assert re.search(r"reporting-enabled = false", merged)
    assert re.search(r"pprof-enabled = false", merged)


# --- the running stack: MQTT ACL ------------------------------------------------------------------


class Probe:
    """A paho-mqtt 2.x client that records what the broker answers and delivers.

    ``tls``: over the TLS listener, verifying the broker against the stack's CA.
    """

    def __init__(
        self,
        env: dict[str, str],
        user: str | None,
        protocol: MQTTProtocolVersion,
        *,
        tls: bool = False,
    ) -> None:
        self.host, self.port = host_port(env["STACK_MQTTS_URL" if tls else "STACK_MQTT_URL"])
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"acltest-{uuid.uuid4().hex[:10]}",
            protocol=protocol,
        )
        if tls:
            self.client.tls_set_context(mqtt_tls_context(env))
        self.client.reconnect_delay_set(5, 5)
        if user is not None:
            name = "mqtt-" + user.removeprefix("sentinel-")
            self.client.username_pw_set(user, secret(name))
        self.connack: ReasonCode | None = None
        self.connected = threading.Event()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.subacks: list[list[ReasonCode]] = []
        self.subscribed = threading.Event()
        self.pubacks: dict[int, ReasonCode] = {}
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if self.connack is None:
            self.connack = rc
        self.connected.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put((msg.topic, bytes(msg.payload)))

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, rcs: list[ReasonCode], _p: Any) -> None:
        self.subacks.append(rcs)
        self.subscribed.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        self.pubacks[mid] = rc

    def connect(self) -> ReasonCode:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(10), "no CONNACK"
        assert self.connack is not None
        return self.connack

    def subscribe(self, *topics: str) -> list[ReasonCode]:
        self.subscribed.clear()
        self.client.subscribe([(t, 1) for t in topics])
        assert self.subscribed.wait(10), "no SUBACK"
        return self.subacks[-1]

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """Publish with QoS 1; the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published(), "no PUBACK"
        return self.pubacks[info.mid]

    def received(self, wait_for: bytes | None = None, timeout: float = 10.0) -> list[bytes]:
        """Payloads delivered so far; with wait_for, until that payload came (then 0.5 s more)."""
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        settle: float | None = None if wait_for is not None else time.monotonic() + 0.5
        while True:
            now = time.monotonic()
            end = settle if settle is not None else deadline
            if now >= end:
                break
            try:
                _topic, payload = self.messages.get(timeout=end - now)
            except queue.Empty:
                continue
            got.append(payload)
            if payload == wait_for:
                settle = time.monotonic() + 0.5
        if wait_for is not None:
            assert wait_for in got, f"positive control {wait_for!r} never delivered"
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_env() -> dict[str, str]:
    env = require_stack("mosquitto")
    problem = None
    if "STACK_MQTTS_URL" not in env:
        problem = "stack.env has no STACK_MQTTS_URL: rendered by an older deploy/local/stack"
    elif not listening(host_port(env["STACK_MQTTS_URL"])):
        problem = f"nothing listens on {env['STACK_MQTTS_URL']}: restart Mosquitto"
    if problem is None:
        return env
    reason = f"{problem} (deploy/local/stack down, then up)"
    if os.environ.get("STACK_REQUIRED") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def listening(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture
def probes(mqtt_env: dict[str, str]) -> Iterator[list[Probe]]:
    made: list[Probe] = []
    yield made
    for probe in made:
        probe.close()


def probe(
    made: list[Probe],
    env: dict[str, str],
    user: str | None,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
    *,
    tls: bool = False,
) -> Probe:
    p = Probe(env, user, protocol, tls=tls)
    made.append(p)
    rc = p.connect()
    if user is not None:
        assert not rc.is_failure, f"{user} could not log in: {rc}"
    return p


def tenant() -> str:
    return f"acltest-{uuid.uuid4().hex[:10]}"


LISTENERS = pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])


@LISTENERS
@pytest.mark.parametrize(
    "protocol", [MQTTProtocolVersion.MQTTv311, MQTTProtocolVersion.MQTTv5], ids=["v311", "v5"]
)
def test_anonymous_connect_is_refused(
    mqtt_env: dict[str, str], probes: list[Probe], protocol: MQTTProtocolVersion, tls: bool
) -> None:
    rc = probe(probes, mqtt_env, None, protocol, tls=tls).connack
    assert rc is not None
    assert rc.is_failure
    # Mosquitto 2.0.11: CONNACK 5 (v3.1.1) / 0x87 (v5), "Not authorized".
    assert rc.getName() == "Not authorized"


@pytest.mark.parametrize(
    "protocol", [MQTTProtocolVersion.MQTTv311, MQTTProtocolVersion.MQTTv5], ids=["v311", "v5"]
)
def test_agent_cannot_publish_to_the_fleet(
    mqtt_env: dict[str, str], probes: list[Probe], protocol: MQTTProtocolVersion
) -> None:
    topic = f"fleet/{tenant()}/z/video/cam-1/telemetry"
    watcher = probe(probes, mqtt_env, "sentinel-operator")
    watcher.subscribe(topic.rsplit("/", 4)[0] + "/#")
    agent = probe(probes, mqtt_env, "sentinel-agent", protocol)
    puback = agent.publish(topic, b"from-agent")
    if protocol == MQTTProtocolVersion.MQTTv5:
        # MQTT 5 says so: PUBACK 0x87. MQTT 3.1.1 cannot: a plain PUBACK, and the message dropped.
        assert puback.value == 0x87, puback
    else:
        assert not puback.is_failure
    probe(probes, mqtt_env, "sentinel-sim").publish(topic, b"from-sim")
    got = watcher.received(wait_for=b"from-sim")
    assert b"from-agent" not in got


def test_agent_may_publish_alerts_and_read_sys(
    mqtt_env: dict[str, str], probes: list[Probe]
) -> None:
    topic = f"sentinel/alerts/{tenant()}"
    watcher = probe(probes, mqtt_env, "sentinel-operator")
    watcher.subscribe(topic)
    agent = probe(probes, mqtt_env, "sentinel-agent")
    agent.publish(topic, b"alert")
    assert watcher.received(wait_for=b"alert")
    agent.subscribe("$SYS/broker/version")
    _topic, payload = agent.messages.get(timeout=10)
    assert payload.startswith(b"mosquitto version")


@LISTENERS
@pytest.mark.parametrize(
    "protocol", [MQTTProtocolVersion.MQTTv311, MQTTProtocolVersion.MQTTv5], ids=["v311", "v5"]
)
def test_device_cannot_read_another_device(
    mqtt_env: dict[str, str], probes: list[Probe], protocol: MQTTProtocolVersion, tls: bool
) -> None:
    root = f"fleet/{tenant()}/z/video"
    dev1 = probe(probes, mqtt_env, "probe-dev-1", protocol, tls=tls)
    # Mosquitto 2.0.11 GRANTS these subscriptions (SUBACK QoS 1) and then filters every message
    # against dev1's read rights at delivery: dev1 receives only its own commands.
    dev1.subscribe(
        "#",
        "fleet/#",
        f"{root}/probe-dev-2/telemetry",
        "fleet/+/+/+/+/telemetry",
        f"{root}/probe-dev-1/command",
    )
    watcher = probe(probes, mqtt_env, "sentinel-operator")
    watcher.subscribe(f"{root}/#")
    dev2 = probe(probes, mqtt_env, "probe-dev-2")
    dev2.publish(f"{root}/probe-dev-2/telemetry", b"dev2-telemetry")
    dev2.publish(f"{root}/probe-dev-2/status", b"online")
    assert b"dev2-telemetry" in watcher.received(wait_for=b"online")
    watcher.publish(f"{root}/probe-dev-1/command", b"dev1-command")
    got = dev1.received(wait_for=b"dev1-command")
    assert set(got) == {b"dev1-command"}, f"device 1 read {got}"


def test_device_cannot_publish_as_another_device(
    mqtt_env: dict[str, str], probes: list[Probe]
) -> None:
    root = f"fleet/{tenant()}/z/lighting"
    watcher = probe(probes, mqtt_env, "sentinel-operator")
    watcher.subscribe(f"{root}/#")
    dev2 = probe(probes, mqtt_env, "probe-dev-2")
    dev2.publish(f"{root}/probe-dev-1/telemetry", b"forged")
    dev2.publish(f"{root}/probe-dev-2/command", b"self-command")
    dev2.publish(f"{root}/probe-dev-2/telemetry", b"own")
    got = watcher.received(wait_for=b"own")
    assert b"forged" not in got
    assert b"self-command" not in got


# --- the running stack: TLS listener, loopback binding ------------------------------------------

TLS_VERSIONS = {"TLSv1.2", "TLSv1.3"}
# An MQTT 3.1.1 CONNECT (client id "", clean session, keepalive 30): a CONNACK starts with 0x20.
MQTT_CONNECT = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tls_handshake(address: tuple[str, int], ctx: ssl.SSLContext, server_hostname: str) -> str:
    """Handshake (certificate and name checked by ctx); the negotiated TLS version."""
    with (
        socket.create_connection(address, timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        version = tls.version()
        assert version is not None
        return version


@pytest.mark.parametrize("hostname", ["127.0.0.1", "localhost"])
def test_tls_handshake_with_the_stack_ca(mqtt_env: dict[str, str], hostname: str) -> None:
    address = host_port(mqtt_env["STACK_MQTTS_URL"])
    assert tls_handshake(address, mqtt_tls_context(mqtt_env), hostname) in TLS_VERSIONS
    # TLS 1.2 is still accepted (older devices), with an AEAD cipher and forward secrecy.
    ctx = mqtt_tls_context(mqtt_env)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(address, timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        cipher = tls.cipher()
        assert tls.version() == "TLSv1.2"
        assert cipher is not None
        assert cipher[0].startswith("ECDHE-"), cipher
        assert "GCM" in cipher[0] or "CHACHA20" in cipher[0], cipher


def test_tls_handshake_fails_without_the_ca(mqtt_env: dict[str, str]) -> None:
    address = host_port(mqtt_env["STACK_MQTTS_URL"])
    # The system's CAs only: the local CA is not among them.
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        tls_handshake(address, ssl.create_default_context(), "127.0.0.1")


def test_tls_handshake_fails_for_another_hostname(mqtt_env: dict[str, str]) -> None:
    address = host_port(mqtt_env["STACK_MQTTS_URL"])
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        tls_handshake(address, mqtt_tls_context(mqtt_env), "broker.example.org")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_refuses_old_versions_and_weak_ciphers(mqtt_env: dict[str, str]) -> None:
    address = host_port(mqtt_env["STACK_MQTTS_URL"])
    old = mqtt_tls_context(mqtt_env)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    # The broker answers with a protocol_version alert: refused by the server, not the client.
    with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"):
        tls_handshake(address, old, "127.0.0.1")
    cbc = mqtt_tls_context(mqtt_env)
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA:AES128-SHA")
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
        tls_handshake(address, cbc, "127.0.0.1")


def test_plaintext_mqtt_on_the_tls_port_gets_no_connack(mqtt_env: dict[str, str]) -> None:
    with socket.create_connection(host_port(mqtt_env["STACK_MQTTS_URL"]), timeout=10) as sock:
        sock.sendall(MQTT_CONNECT)
        try:
            answer = sock.recv(64)
        except ConnectionResetError:
            answer = b""
    # The broker closes the connection (or sends a TLS alert record, 0x15): never a CONNACK.
    assert not answer.startswith(b"\x20"), answer
    assert answer == b"" or answer[0] == 0x15, answer


def test_plaintext_mqtt_still_works_on_the_plain_listener(mqtt_env: dict[str, str]) -> None:
    """Positive control for the test above: the same bytes get a CONNACK (refused: anonymous)."""
    with socket.create_connection(host_port(mqtt_env["STACK_MQTT_URL"]), timeout=10) as sock:
        sock.sendall(MQTT_CONNECT)
        answer = sock.recv(64)
    # CONNACK, return code 5 "not authorised" (anonymous clients are refused).
    assert answer == bytes([0x20, 2, 0, 5]), answer


def test_agent_subscribes_over_tls(mqtt_env: dict[str, str], probes: list[Probe]) -> None:
    topic = f"sentinel/alerts/{tenant()}"
    watcher = probe(probes, mqtt_env, "sentinel-operator", tls=True)
    watcher.subscribe(topic)
    agent = probe(probes, mqtt_env, "sentinel-agent", tls=True)
    agent.publish(topic, b"alert-over-tls")
    assert watcher.received(wait_for=b"alert-over-tls")
    sock = agent.client.socket()
    assert isinstance(sock, ssl.SSLSocket)
    assert sock.version() in TLS_VERSIONS


def listening_sockets(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp{,6}) of the TCP sockets listening on port."""
    found = []
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text(encoding="ascii").splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: TCP_LISTEN
                found.append(address)
    return found


# 127.0.0.1 in /proc/net/tcp's byte order, and ::1 in /proc/net/tcp6's.
LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000"}


@pytest.mark.parametrize("key", ["STACK_MQTT_URL", "STACK_MQTTS_URL"], ids=["plain", "tls"])
def test_mqtt_listeners_bind_loopback_only(mqtt_env: dict[str, str], key: str) -> None:
    _host, port = host_port(mqtt_env[key])
    addresses = listening_sockets(port)
    assert addresses, f"nothing listens on port {port}"
    assert set(addresses) <= LOOPBACK_HEX, f"port {port} listens on {addresses}"


# --- the running stack: InfluxDB, Prometheus, Alertmanager ----------------------------------------


def http_json(
    url: str,
    *,
    data: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, Any]:
    headers = {}
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    payload = body if body is not None else None
    if data is not None:
        payload = urllib.parse.urlencode(data).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=payload, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


def test_influxdb_requires_auth_and_grafana_user_is_read_only() -> None:
    env = require_stack("influxdb")
    base = env["STACK_INFLUX_URL"]
    status, _ = http_json(f"{base}/query", data={"q": "SHOW DATABASES"})
    assert status == 401
    agent = (env["STACK_INFLUX_USER"], secret("influx-agent"))
    status, body = http_json(
        f"{base}/query", data={"q": "SHOW MEASUREMENTS", "db": env["STACK_INFLUX_DB"]}, auth=agent
    )
    assert (status, "error" in json.dumps(body)) == (200, False), body
    reader = (env["STACK_INFLUX_READER_USER"], secret("influx-grafana"))
    status, body = http_json(
        f"{base}/query", data={"q": "SHOW MEASUREMENTS", "db": env["STACK_INFLUX_DB"]}, auth=reader
    )
    assert (status, "error" in json.dumps(body)) == (200, False), body
    status, _ = http_json(
        f"{base}/write?db={env['STACK_INFLUX_DB']}&precision=ms",
        body=b"stack_selftest value=1 1",
        auth=reader,
    )
    assert status == 403


def test_prometheus_scrapes_the_agent_port_and_knows_alertmanager_and_rules() -> None:
    env = require_stack("prometheus", "alertmanager")
    prom = env["STACK_PROM_URL"]
    status, body = http_json(f"{prom}/api/v1/targets")
    assert status == 200
    scrape_urls = {t["labels"]["job"]: t["scrapeUrl"] for t in body["data"]["activeTargets"]}
    assert scrape_urls["sentinel-agent"] == f"http://127.0.0.1:{env['STACK_AGENT_PORT']}/metrics"
    status, body = http_json(f"{prom}/api/v1/rules")
    names = {r["name"] for g in body["data"]["groups"] for r in g["rules"]}
    assert "SentinelAgentDown" in names
    deadline = time.monotonic() + 15
    while True:
        status, body = http_json(f"{prom}/api/v1/alertmanagers")
        active = [a["url"] for a in body["data"]["activeAlertmanagers"]]
        if active or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert active == [f"{env['STACK_AM_URL']}/api/v2/alerts"]


def test_status_reports_all_four_running() -> None:
    env = require_stack()
    proc = run(STACK_SCRIPT, "status", env={**os.environ, **env})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [
        "mosquitto",
        "influxdb",
        "prometheus",
        "alertmanager",
    ]
    assert all(line.split()[1] == "running" for line in lines)
