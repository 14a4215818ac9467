"""A capture of the real stack: tcpdump on loopback while MQTT attacks run against Mosquitto."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sentinel.traffic import TrafficAlert, analyze_file
from tests.stack_env import host_port, require_stack, secret

pytestmark = pytest.mark.stack


class Session:
    """One paho client driven step by step (no background thread: exactly one CONNECT)."""

    def __init__(
        self, url: str, client_id: str, user: str, password: str, v5: bool = False
    ) -> None:
        protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id, protocol=protocol)
        self.client.username_pw_set(user, password)
        self.acks: list[str] = []
        self.client.on_connect = lambda *args: self.acks.append("connack")
        self.client.on_subscribe = lambda *args: self.acks.append("suback")
        self.client.on_publish = lambda *args: self.acks.append("puback")
        self.client.connect(*host_port(url), keepalive=60)
        self.wait("connack")

    def wait(self, ack: str, within_s: float = 5.0) -> None:
        deadline = time.monotonic() + within_s
        while ack not in self.acks:
            assert time.monotonic() < deadline, f"no {ack}"
            self.client.loop(0.05)
        self.acks.remove(ack)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop(0.05)


class Tcpdump:
    """tcpdump on loopback, filtered on the broker's port (lo shows each packet once)."""

    def __init__(self, path: Path, port: int) -> None:
        self.path = path
        # --immediate-mode, a 64 MiB buffer (-B, KiB) and -U: packets read and written at once,
        # none dropped in a burst of short connections, none lost when tcpdump is stopped.
        command = ["tcpdump", "-i", "lo", "--immediate-mode", "-B", "65536", "-U", "-w"]
        self.proc = subprocess.Popen(
            [*command, str(path), f"tcp port {port}"], stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # "listening on lo, ..." once it captures
        assert "listening on" in line, f"tcpdump did not start: {line}"

    def stop(self) -> Path:
        if self.proc.poll() is None:
            time.sleep(0.2)  # the last FIN/ACKs
            self.proc.terminate()
            _, stats = self.proc.communicate(timeout=10)
            assert "\n0 packets dropped by kernel" in f"\n{stats}", stats
        return self.path


@pytest.fixture
def tcpdump(tmp_path: Path) -> Iterator[tuple[str, Tcpdump]]:
    env = require_stack("mosquitto")
    if shutil.which("tcpdump") is None:
        reason = "tcpdump is not installed (apt-get install tcpdump)"
        if os.environ.get("STACK_REQUIRED") == "1":
            pytest.fail(f"STACK_REQUIRED=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    url = env["STACK_MQTT_URL"]
    capture = Tcpdump(tmp_path / "stack.pcap", host_port(url)[1])
    try:
        yield url, capture
    finally:
        capture.stop()


def test_stack_attacks_are_found(tcpdump: tuple[str, Tcpdump]) -> None:
    url, capture = tcpdump
    uid = uuid.uuid4().hex[:8]
    own = f"fleet/test-{uid}/zone/lighting/probe-dev-1"
    # Benign: a device on its own topics, the simulator's telemetry, an operator (MQTT 5).
    device = Session(url, f"dev1-{uid}", "probe-dev-1", secret("mqtt-probe-dev-1"))
    device.client.subscribe(f"{own}/command", qos=1)
    device.wait("suback")
    device.client.publish(f"{own}/telemetry", b'{"ts": 1, "metrics": {"on": 1}}', qos=1)
    device.wait("puback")
    operator = Session(url, f"op-{uid}", "sentinel-operator", secret("mqtt-operator"), v5=True)
    operator.client.subscribe(f"fleet/test-{uid}/#", qos=1)
    operator.wait("suback")
    operator.client.publish(f"{own}/command", b'{"dim": 40}', qos=1)
    operator.wait("puback")
    sim = Session(url, f"sim-{uid}", "sentinel-sim", secret("mqtt-sim"), v5=True)
    sim.client.publish(f"fleet/test-{uid}/zone/video/cam-1/telemetry", b"{}", qos=1)
    sim.wait("puback")
    # Attacks: wrong passwords, a device subscribing to everything, a command by the simulator.
    for i in range(12):
        Session(url, f"bf-{uid}-{i}", "probe-dev-2", "wrong-password").close()
    sniffer = Session(url, f"snif-{uid}", "probe-dev-1", secret("mqtt-probe-dev-1"))
    sniffer.client.subscribe("#", qos=0)
    sniffer.wait("suback")
    sim.client.publish(f"fleet/test-{uid}/zone/lighting/probe-dev-2/command", b"{}", qos=1)
    sim.wait("puback")
    for session in (device, operator, sim, sniffer):
        session.close()

    analysis = analyze_file(capture.stop(), keep_events=True)
    ours = [a for a in analysis.alerts if _about(a, uid)]
    assert {(a.kind, a.subject, a.count) for a in ours} == {
        ("brute_force_user", "probe-dev-2", 12),
        ("forbidden_subscription", f"snif-{uid}", 1),
        ("command_publish", f"sim-{uid}", 1),
    }
    by_ip = [a for a in analysis.alerts if a.kind == "brute_force_ip"]
    assert len(by_ip) == 1
    assert by_ip[0].subject == "127.0.0.1"
    assert by_ip[0].count >= 12  # other clients of the shared broker may fail logins too
    refused = [e for e in analysis.events if getattr(e.packet, "code", 0) == 5]
    assert len([e for e in refused if e.client_id and e.client_id.startswith(f"bf-{uid}")]) == 12
    s = analysis.summary
    assert s.parse_errors == 0
    assert s.reassembly_gaps == 0
    assert s.mqtt_streams >= 16


def _about(alert: TrafficAlert, uid: str) -> bool:
    return uid in alert.subject or alert.subject == "probe-dev-2"
