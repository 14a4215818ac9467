"""The agent's live traffic sources against the real stack: it follows Mosquitto's log (and
$SYS) or captures on loopback while this test attacks the broker, and the alerts must reach
the real Alertmanager. Others use the same broker meanwhile: everything is filtered by this
test's own tenant label, client ids and usernames."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import FleetTopics, Stack, agent_config, poll_rows, running_agent
from tests.stack_env import host_port, require_stack, secret, stack_dir
from tests.test_traffic_live import require_root

pytestmark = pytest.mark.stack


def login(url: str, client_id: str, user: str, password: str) -> tuple[mqtt.Client, int]:
    """One MQTT 3.1.1 login, driven step by step; the CONNACK's reason code."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id)
    client.username_pw_set(user, password)
    codes: list[int] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: codes.append(reason.value)
    client.connect(*host_port(url), keepalive=60)
    deadline = time.monotonic() + 5
    while not codes:
        assert time.monotonic() < deadline, "no CONNACK"
        client.loop(0.05)
    return client, codes[0]


def subscribe_all(client: mqtt.Client) -> None:
    acks: list[int] = []
    client.on_subscribe = lambda *_args: acks.append(1)
    client.subscribe("#", qos=0)
    deadline = time.monotonic() + 5
    while not acks:
        assert time.monotonic() < deadline, "no SUBACK"
        client.loop(0.05)


def brute_force(url: str, uid: str, user: str, attempts: int) -> None:
    for i in range(attempts):
        client, code = login(url, f"bf-{uid}-{i}", user, "wrong-password")
        assert code != 0
        client.loop(0.05)


async def am_alerts(stack: Stack, tenant: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{stack.am_url}/api/v2/alerts", params={"filter": f'tenant="{tenant}"'}
        ) as resp,
    ):
        assert resp.status == 200
        alerts: list[dict[str, Any]] = await resp.json()
        return alerts


async def wait_for(
    stack: Stack, tenant: str, found: Any, within_s: float = 15.0
) -> tuple[list[dict[str, Any]], float]:
    """Poll Alertmanager until `found(alerts)`; the alerts and the time it took."""
    start = time.monotonic()
    while True:
        alerts = await am_alerts(stack, tenant)
        if found(alerts):
            return alerts, time.monotonic() - start
        assert time.monotonic() - start < within_s, f"not in Alertmanager: {alerts}"
        await asyncio.sleep(0.05)


def named(alerts: list[dict[str, Any]], alertname: str, text: str = "") -> list[dict[str, Any]]:
    return [
        a
        for a in alerts
        if a["labels"]["alertname"] == alertname
        and text in a["annotations"]["summary"] + a["annotations"]["evidence"]
    ]


async def metrics_text(port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        return await resp.text()


async def test_agent_follows_the_broker_log(
    stack: Stack, influx_db: str, fleet: FleetTopics
) -> None:
    uid = uuid.uuid4().hex[:8]
    tenant = f"t-{uid}"
    config = agent_config(
        stack,
        influx_db,
        fleet.root,
        traffic={
            "broker_log_file": str(stack_dir() / "logs" / "mosquitto.log"),
            "sys_topics": True,
            "brute_force_failures": 6,
            "resolve_after_s": 3.0,
            "tenant": tenant,
            "subject_buckets": 4096,  # others' subjects in other buckets than ours
        },
    )
    url = stack.mqtt_url
    async with running_agent(config) as agent:
        await asyncio.sleep(0.3)  # the follower is at the end of the file
        # Wrong passwords for a real device, each with its own client id.
        # Exactly the threshold: the alert can only fire on the last one (or earlier, when
        # other tests' failed logins from 127.0.0.1 count too).
        await asyncio.to_thread(brute_force, url, uid, "probe-dev-2", 6)
        bf_done = time.monotonic()
        brute, bf_wait = await wait_for(
            stack, tenant, lambda a: named(a, "TrafficBruteForceIp", "127.0.0.1")
        )
        # A field device subscribing to everything.
        sniffer, code = await asyncio.to_thread(
            login, url, f"snif-{uid}", "probe-dev-1", secret("mqtt-probe-dev-1")
        )
        assert code == 0
        await asyncio.to_thread(subscribe_all, sniffer)
        sub_done = time.monotonic()
        found, sub_wait = await wait_for(
            stack, tenant, lambda a: named(a, "TrafficForbiddenSubscription", f"snif-{uid}")
        )
        sniffer.disconnect()
        [bf] = named(brute, "TrafficBruteForceIp")
        assert bf["labels"]["severity"] == "critical"
        assert bf["labels"]["kind"] == "_traffic"
        assert bf["labels"]["detector"] == "traffic-brute-force-ip"
        [sub] = named(found, "TrafficForbiddenSubscription")
        labels = sub["labels"]
        assert (labels["tenant"], labels["zone"], labels["kind"]) == (tenant, "_broker", "_traffic")
        assert labels["device_id"].startswith("_s")
        assert f"snif-{uid}" not in json.dumps(labels)  # an attacker's string: never a label
        evidence = json.loads(sub["annotations"]["evidence"])
        assert evidence["filters"] == "#"
        assert evidence["reason"] == "all_topics"
        assert evidence["username"] == "probe-dev-1"
        assert evidence["origin"] == "broker_log"
        print(
            f"\nbroker log → Alertmanager: brute force {bf_wait:.2f} s after the last refused "
            f"login, '#' subscription {sub_wait:.2f} s after its SUBACK"
        )
        # Quiet for resolve_after_s: the subscription alert is resolved and leaves the list
        # (the brute force may stay: other tests keep failing logins from 127.0.0.1).
        _, resolved_in = await wait_for(
            stack,
            tenant,
            lambda a: not named(a, "TrafficForbiddenSubscription", f"snif-{uid}"),
            within_s=20,
        )
        print(f"forbidden subscription resolved {sub_wait + resolved_in:.1f} s after it fired")
        # $SYS values as gauges, and the log's line counts.
        deadline = time.monotonic() + 15
        while True:
            text = await metrics_text(config.http.port)
            if 'sentinel_broker_clients{state="connected"}' in text:
                break
            assert time.monotonic() < deadline, "no $SYS gauge"
            await asyncio.sleep(0.2)
        assert 'sentinel_traffic_source_up{source="broker_log"} 1.0' in text
        assert 'sentinel_traffic_source_up{source="sys_topics"} 1.0' in text
        assert 'sentinel_broker_messages_per_second{direction="received",window="1min"}' in text
        refused = next(
            line
            for line in text.splitlines()
            if line.startswith('sentinel_broker_log_lines_total{event="refused"}')
        )
        assert float(refused.split()[-1]) >= 6
        assert agent.internal_errors == 0
        assert bf_done < sub_done


async def test_agent_captures_on_loopback(
    stack: Stack, influx_db: str, fleet: FleetTopics, tmp_path: Path
) -> None:
    require_root()
    uid = uuid.uuid4().hex[:8]
    tenant = f"c-{uid}"
    port = host_port(stack.mqtt_url)[1]
    # Loopback as an inventory device: its alerts carry it, its flow features are stored.
    device = {"device_id": f"gw-{uid}", "ip": "127.0.0.1", "kind": "video", "zone": "lo"}
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps([{**device, "tenant": tenant}]))
    config = agent_config(
        stack,
        influx_db,
        fleet.root,
        traffic={
            "capture_iface": "lo",
            "bpf": f"tcp port {port}",
            "inventory_file": str(inventory),
            "window_s": 2.0,
            "brute_force_failures": 6,
        },
    )
    user = f"bf-user-{uid}"  # no such account: the capture sees the username, the log does not
    async with running_agent(config):
        deadline = time.monotonic() + 15
        while 'sentinel_traffic_source_up{source="capture"} 1.0' not in await metrics_text(
            config.http.port
        ):
            assert time.monotonic() < deadline, "the capture did not start"
            await asyncio.sleep(0.1)
        await asyncio.to_thread(brute_force, stack.mqtt_url, uid, user, 8)
        found, waited = await wait_for(
            stack, tenant, lambda a: named(a, "TrafficBruteForceUser", user)
        )
        [alert] = named(found, "TrafficBruteForceUser")
        labels = alert["labels"]
        assert (labels["tenant"], labels["zone"], labels["device_id"]) == (
            tenant,
            "lo",
            f"gw-{uid}",
        )
        evidence = json.loads(alert["annotations"]["evidence"])
        assert evidence["origin"] == "capture"
        assert evidence["ips"] == "127.0.0.1"
        # The refusals up to the tick that delivered it (6 open it), each counted once.
        assert 6 <= evidence["count"] <= 8
        print(f"\nlive capture → Alertmanager: brute force on a username {waited:.2f} s after")
        # Flow features of the inventory device, as records in InfluxDB.
        query = f"SELECT * FROM video WHERE device_id = 'gw-{uid}'"
        found_rows = await poll_rows(stack, influx_db, query, lambda r: len(r) >= 1)
        assert found_rows, "no flow features stored"
        row = found_rows[0]
        assert row["tenant"] == tenant
        assert row["net_bytes_out"] > 0
        assert row["net_bytes_out"] == row["net_bytes_in"]  # 127.0.0.1 talks to itself
        text = await metrics_text(config.http.port)
    assert "sentinel_traffic_feature_records_total 0.0" not in text
    assert "sentinel_capture_kernel_drops_total 0.0" in text


def test_capture_command_on_loopback(tmp_path: Path) -> None:
    require_root()
    env = require_stack("mosquitto")
    url = env["STACK_MQTT_URL"]
    port = host_port(url)[1]
    uid = uuid.uuid4().hex[:8]
    sentinel = [sys.executable, "-m", "sentinel.cli"]
    command = [*sentinel, "capture", "--iface", "lo", "--bpf", f"tcp port {port}", "--json"]
    config = tmp_path / "traffic.toml"
    config.write_text("[traffic]\nbrute_force_failures = 6\n")
    proc = subprocess.Popen(
        [*command, "--config", str(config), "--duration", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        assert "capturing on lo" in proc.stderr.readline()
        user = f"bf-cli-{uid}"
        brute_force(url, uid, user, 7)
        sniffer, _ = login(url, f"snif-cli-{uid}", "probe-dev-1", secret("mqtt-probe-dev-1"))
        subscribe_all(sniffer)
        sniffer.disconnect()
        time.sleep(0.5)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[-1]["type"] == "summary"
    ours = {(a["kind"], a["subject"], a["count"]) for a in lines[:-1] if uid in a["subject"]}
    assert ours == {
        ("brute_force_user", f"bf-cli-{uid}", 6),  # printed as it opens
        ("forbidden_subscription", f"snif-cli-{uid}", 1),
    }
    assert lines[-1]["parse_errors"] == 0
