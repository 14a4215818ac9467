"""`sentinel capture --agent` on the real stack: a capture process (root: CAP_NET_RAW) on
loopback feeds a real agent process (no capture of its own) over its API with its token,
while this test brute-forces the real Mosquitto. The agent must raise the alert (its API,
InfluxDB `alerts`, origin capture) and store the inventory device's flow windows. Prints the
latency from the deciding CONNACK to the alert in the agent's API, for a few rounds."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.agent_process import start_agent
from tests.conftest import FleetTopics, Stack, free_port, poll_rows
from tests.stack_env import host_port
from tests.test_stack_lifecycle import Api, config_text
from tests.test_traffic_live import require_root
from tests.test_traffic_live_stack import login

pytestmark = pytest.mark.stack

FAILURES = 6  # brute_force_failures: the sixth refused login decides
ROUNDS = 3


def refused_logins(url: str, uid: str, user: str, attempts: int) -> float:
    """Wrong passwords; the monotonic time the last CONNACK (a refusal) arrived."""
    for i in range(attempts):
        client, code = login(url, f"bf-{uid}-{i}", user, "wrong-password")
        arrived = time.monotonic()
        assert code != 0
        client.loop(0.01)
    return arrived


def brute_force_user(body: dict[str, Any], device_id: str) -> list[dict[str, Any]]:
    return [
        a
        for a in body["active"]
        if a["labels"]["alertname"] == "TrafficBruteForceUser"
        and a["labels"]["device_id"] == device_id
    ]


def ours(body: dict[str, Any], device_id: str, user: str) -> list[dict[str, Any]]:
    return [a for a in brute_force_user(body, device_id) if a["evidence"]["subject"] == user]


async def test_capture_feeds_the_running_agent(
    stack: Stack, influx_db: str, fleet: FleetTopics, tmp_path: Path
) -> None:
    require_root()
    uid = uuid.uuid4().hex[:8]
    tenant = f"f-{uid}"
    mqtt_port = host_port(stack.mqtt_url)[1]
    # Loopback as an inventory device of the capture: its alerts carry it, its windows are
    # stored. The agent has no [traffic] source of its own, and no inventory.
    inventory = tmp_path / "inventory.json"
    inventory.write_text(
        json.dumps(
            [
                {
                    "device_id": f"gw-{uid}",
                    "ip": "127.0.0.1",
                    "kind": "video",
                    "zone": "lo",
                    "tenant": tenant,
                }
            ]
        )
    )
    port = free_port()
    config = config_text(
        stack,
        influx_db,
        fleet.root,
        port,
        tmp_path,
        f"[traffic]\nbrute_force_failures = {FAILURES}\nwindow_s = 2.0\nresolve_after_s = 1.0\n",
    )
    agent = await start_agent(config)
    capture = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sentinel.cli",
        "capture",
        "--iface",
        "lo",
        "--bpf",
        f"tcp port {mqtt_port}",
        "--agent",
        "--config",
        str(config),
        "--inventory",
        str(inventory),
        "--json",
        "--duration",
        "120",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    latencies: list[float] = []
    try:
        assert capture.stderr is not None
        started = await asyncio.wait_for(capture.stderr.readline(), 30)
        assert b"capturing on lo" in started, started
        assert b"feeding the agent" in started, started
        async with aiohttp.ClientSession() as session:
            api = Api(session, port)
            device_id = f"gw-{uid}"
            first: dict[str, Any] = {}
            for round_ in range(ROUNDS):
                # One alert per kind and device: the previous round's must have resolved
                # (quiet for resolve_after_s) for this round to raise a new one. Others'
                # brute forces from 127.0.0.1 would also land on this device: wait them out.
                await api.wait("/api/alerts", lambda b: not brute_force_user(b, device_id))
                user = f"bf-feed-{uid}-{round_}"  # no such account: only the capture sees it
                decided = await asyncio.to_thread(
                    refused_logins, stack.mqtt_url, f"{uid}{round_}", user, FAILURES
                )
                while not (
                    found := ours((await api.call("GET", "/api/alerts"))[1], device_id, user)
                ):
                    assert time.monotonic() - decided < 15, "no alert in the agent's API"
                    await asyncio.sleep(0.01)
                latencies.append(time.monotonic() - decided)
                first = first or found[0]
        alert = first
        labels = alert["labels"]
        assert (labels["tenant"], labels["zone"], labels["kind"], labels["device_id"]) == (
            tenant,
            "lo",
            "video",
            f"gw-{uid}",
        )
        assert labels["detector"] == "traffic-brute-force-user"
        assert labels["severity"] == "critical"
        evidence = alert["evidence"]
        assert evidence["origin"] == "capture"
        assert evidence["ips"] == "127.0.0.1"
        assert FAILURES <= evidence["count"] <= FAILURES + 1
        assert "in the live capture" in alert["summary"]
        stored = await poll_rows(
            stack,
            influx_db,
            'SELECT "evidence", "state" FROM alerts WHERE detector = '
            f"'traffic-brute-force-user' AND device_id = 'gw-{uid}'",
            lambda r: any(f"bf-feed-{uid}-0" in row["evidence"] for row in r),
        )
        [row] = [
            r for r in stored if f"bf-feed-{uid}-0" in r["evidence"] and r["state"] == "firing"
        ]
        assert json.loads(row["evidence"])["origin"] == "capture"
        assert any(r["state"] == "resolved" for r in stored)  # quiet: resolved by the feed's clock
        # The inventory device's flow windows, stored as records.
        windows = await poll_rows(
            stack,
            influx_db,
            f"SELECT * FROM video WHERE device_id = 'gw-{uid}'",
            lambda r: len(r) >= 1,
        )
        assert windows, "no flow windows stored"
        assert windows[0]["tenant"] == tenant
        assert windows[0]["net_bytes_out"] > 0
    finally:
        if capture.returncode is None:
            capture.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(capture.communicate(), 60)
        await agent.stop()
    assert capture.returncode == 0, err.decode()[-2000:]
    summary = json.loads(out.decode().splitlines()[-1])
    assert summary["type"] == "summary"
    fed = summary["feed"]
    assert fed["batches"] >= ROUNDS
    assert fed["alerts"] >= ROUNDS
    assert fed["features"] >= 1
    assert (fed["failed"], fed["refused"], fed["dropped"], fed["unsent"]) == (0, 0, 0, 0)
    print(
        f"\ncapture → feed → agent API, from the deciding CONNACK: "
        f"{', '.join(f'{x * 1000:.0f}' for x in latencies)} ms "
        f"(median {statistics.median(latencies) * 1000:.0f} ms)"
    )


def test_capture_without_an_agent_keeps_capturing_and_says_so(tmp_path: Path) -> None:
    """No agent at the configured address: the capture runs anyway, keeps what it found
    and reports the attempts that found no agent and what it could not deliver."""
    require_root()
    config, token, inventory = tmp_path / "agent.toml", tmp_path / "token", tmp_path / "inv.json"
    token.write_text("t")
    inventory.write_text(
        json.dumps([{"device_id": "lo-1", "ip": "127.0.0.1", "kind": "video", "zone": "lo",
                     "tenant": "nobody"}])
    )  # fmt: skip
    config.write_text(
        f'[http]\nlisten = "127.0.0.1:{free_port()}"\ntoken_file = "{token}"\n'
        "[traffic]\nwindow_s = 0.5\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        udp = rx.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "sentinel.cli", "capture", "--iface", "lo", "--bpf",
             f"udp port {udp}", "--agent", "--config", str(config), "--inventory",
             str(inventory), "--json", "--duration", "4"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "no agent at http://127.0.0.1:" in first, first
        assert "capturing anyway" in first, first
        assert "capturing on lo" in proc.stderr.readline()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for _ in range(20):  # windows of 127.0.0.1 for 2 s
                tx.sendto(b"x", ("127.0.0.1", udp))
                time.sleep(0.1)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    fed = json.loads(out.splitlines()[-1])["feed"]
    assert fed["batches"] == 0
    assert fed["failed"] >= 1  # retried, with backoff
    assert fed["unsent"] >= 1  # kept until the end
    assert "attempts found no agent" in err
