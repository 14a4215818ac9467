"""The alert lifecycle on the real stack, through a real agent process and its HTTP API:
one power cut is one incident with a bounded number of Alertmanager alerts; suppressions mute
and expire; feedback is stored and its suggestion, accepted, mutes the next episode; a SIGHUP
reload keeps detector state and a bad reload changes nothing."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.agent_process import AgentProcess, start_agent, write_config
from tests.conftest import FleetTopics, Stack, free_port, poll_rows
from tests.mqtt_util import client_as, publish_all

pytestmark = pytest.mark.stack

TOKEN = "lifecycle-test-token-" + uuid.uuid4().hex


def detectors_toml(raise_after: int, severity: str = "critical", clear_after: int = 1) -> str:
    return f"""
[[detectors]]
name = "camera-dark"
type = "threshold"
kinds = ["video"]
severity = "{severity}"
group = "outage"
[detectors.params]
metric = "fps"
op = "<"
value = 1
raise_after = {raise_after}
clear_after = {clear_after}
"""


def alert_topic(root: str) -> str:
    return f"sentinel/alerts/{root.rsplit('/', 1)[-1]}"


async def collect_alerts(stack: Stack, topic: str, out: list[Any], ready: asyncio.Event) -> None:
    """Listen as the operator (the ACL lets it read sentinel/alerts/#)."""
    async with client_as(stack.mqtt_url, "operator") as client:
        await client.subscribe(topic + "/#", qos=1)
        ready.set()
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            out.append((str(message.topic), orjson.loads(message.payload)))


def config_text(
    stack: Stack, db: str, root: str, port: int, tmp: Path, body: str, alerting: str = ""
) -> Path:
    token_file = tmp / "token"
    token_file.write_text(TOKEN)
    path = tmp / "agent.toml"
    write_config(
        path,
        stack,
        db,
        root,
        f"agent-{root[-10:]}",
        http_port=port,
        http_extra=f'token_file = "{token_file}"',
        alertmanager_url=stack.am_url,
        extra=f"""
[alerting]
mqtt_topic = "{alert_topic(root)}"
max_notified_per_incident = 5
incident_quiet_s = 2
state_file = "{tmp / "desk.json"}"
audit_file = "{tmp / "audit.jsonl"}"
{alerting}
{body}""",
    )
    return path


def reports(
    fleet: FleetTopics, zone: str, devices: range, fps: float, t0: float, n: int
) -> list[tuple[str, bytes]]:
    return [
        (
            fleet.telemetry("lyon", zone, "video", f"cam-{i:04d}"),
            orjson.dumps({"ts": t0 + k, "metrics": {"fps": fps}}),
        )
        for k in range(n)
        for i in devices
    ]


class Api:
    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{port}"
        self.auth = {"Authorization": f"Bearer {TOKEN}"}

    async def call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        data = None if body is None else orjson.dumps(body)
        async with self.session.request(
            method, self.base + path, data=data, headers=self.auth
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def wait(self, path: str, done: Any, within_s: float = 15.0) -> Any:
        deadline = time.monotonic() + within_s
        while True:
            status, body = await self.call("GET", path)
            if status == 200 and done(body):
                return body
            assert time.monotonic() < deadline, f"{path}: {body}"
            await asyncio.sleep(0.2)


async def am_alerts(stack: Stack, session: aiohttp.ClientSession, zone: str) -> list[Any]:
    params = [("filter", f'zone="{zone}"')]
    async with session.get(f"{stack.am_url}/api/v2/alerts", params=params) as resp:
        found: list[Any] = await resp.json()
        return found


async def start(
    stack: Stack, db: str, fleet: FleetTopics, tmp: Path, body: str, alerting: str = ""
) -> tuple[AgentProcess, Path, int]:
    port = free_port()
    path = config_text(stack, db, fleet.root, port, tmp, body, alerting)
    return await start_agent(path), path, port


async def test_power_cut_is_one_incident_and_alertmanager_gets_a_bounded_number(
    stack: Stack, influx_db: str, fleet: FleetTopics, tmp_path: Path
) -> None:
    zone = f"z{uuid.uuid4().hex[:8]}"
    agent, _, port = await start(stack, influx_db, fleet, tmp_path, detectors_toml(2))
    t0 = time.time() - 60
    on_mqtt: list[Any] = []
    listening = asyncio.Event()
    listener = asyncio.create_task(
        collect_alerts(stack, alert_topic(fleet.root), on_mqtt, listening)
    )
    await asyncio.wait_for(listening.wait(), 10)
    try:
        await publish_all(stack.mqtt_url, reports(fleet, zone, range(120), 0.0, t0, 3))
        async with aiohttp.ClientSession() as session:
            api = Api(session, port)
            body = await api.wait(
                "/api/incidents", lambda b: any(i["alerts"] == 120 for i in b["incidents"])
            )
            (incident,) = [i for i in body["incidents"] if i["zone"] == zone]
            assert (incident["devices"], incident["notified"], incident["rolled_up"]) == (
                120,
                5,
                115,
            )
            deadline = time.monotonic() + 15
            while len(found := await am_alerts(stack, session, zone)) < 6:
                assert time.monotonic() < deadline, found
                await asyncio.sleep(0.3)
            await asyncio.sleep(2.5)  # a resend interval: nothing more may arrive
            found = await am_alerts(stack, session, zone)
        names = sorted(a["labels"]["alertname"] for a in found)
        assert names == ["CameraDark"] * 5 + ["SentinelIncidentRollup"]
        assert {a["labels"]["incident"] for a in found} == {incident["id"]}
        stored = await poll_rows(
            stack,
            influx_db,
            f"SELECT count(\"fingerprint\") FROM alerts WHERE zone = '{zone}'",
            lambda r: bool(r) and r[0]["count"] >= 120,
        )
        assert stored[0]["count"] == 120  # every alert is stored, even those rolled up
        opened = await poll_rows(
            stack,
            influx_db,
            f"SELECT \"incident\" FROM incidents WHERE zone = '{zone}' AND state = 'open'",
            bool,
        )
        assert [r["incident"] for r in opened] == [incident["id"]]
        # The same notices on the MQTT alerts topic, for automation: five alerts, and the
        # roll-up each time its count changed (once per batch at most).
        topics = {t for t, _ in on_mqtt}
        assert topics == {f"{alert_topic(fleet.root)}/lyon/{zone}/critical"}
        alone = [m for _, m in on_mqtt if m["labels"]["alertname"] == "CameraDark"]
        rollups = [m for _, m in on_mqtt if m["labels"]["alertname"] != "CameraDark"]
        assert len(alone) == 5
        assert rollups[-1]["evidence"]["rolled_up"] == 115
    finally:
        listener.cancel()
        await agent.stop()


async def test_suppression_feedback_and_suggestion_round_trip(
    stack: Stack, influx_db: str, fleet: FleetTopics, tmp_path: Path
) -> None:
    quiet, noisy = f"q{uuid.uuid4().hex[:8]}", f"n{uuid.uuid4().hex[:8]}"
    agent, _, port = await start(stack, influx_db, fleet, tmp_path, detectors_toml(1))
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(session, port)
            status, made = await api.call(
                "POST",
                "/api/suppressions",
                {
                    "matchers": {"zone": quiet},
                    "duration_s": 4,
                    "author": "ops@lyon",
                    "reason": "cabinet works",
                    "kind": "maintenance",
                },
            )
            assert status == 201, made
            now = time.time()
            await publish_all(stack.mqtt_url, reports(fleet, quiet, range(1), 0.0, now, 1))
            await publish_all(stack.mqtt_url, reports(fleet, noisy, range(1, 2), 0.0, now, 1))
            body = await api.wait("/api/alerts", lambda b: len(b["active"]) == 2)
            states = {a["labels"]["zone"]: a["state"] for a in body["active"]}
            assert states == {quiet: "suppressed", noisy: "firing"}
            await asyncio.sleep(3)
            assert await am_alerts(stack, session, quiet) == []
            assert len(await am_alerts(stack, session, noisy)) == 1

            # Feedback on the noisy one: stored in InfluxDB, a suppress suggestion accepted.
            (fired,) = [a for a in body["active"] if a["state"] == "firing"]
            status, fb = await api.call(
                "POST",
                "/api/feedback",
                {"target": fired["fingerprint"], "verdict": "fp", "author": "ana", "note": "lab"},
            )
            assert status == 201, fb
            (suggestion,) = [s for s in fb["suggestions"] if s["kind"] == "suppress"]
            status, accepted = await api.call(
                "POST", f"/api/suggestions/{suggestion['id']}/accept", {"author": "olivier"}
            )
            assert (status, accepted["suggestion"]["state"]) == (200, "accepted")
            rows = await poll_rows(stack, influx_db, "SELECT * FROM feedback GROUP BY *", bool)
            assert [(r["verdict"], r["target"], r["author"]) for r in rows] == [
                ("fp", fired["fingerprint"], "ana")
            ]

            # Both alerts end; the next episodes: the maintenance window has expired, the
            # accepted suggestion now mutes the noisy camera.
            await asyncio.sleep(max(0.0, made["suppression"]["ends_at"] - time.time()))
            later = time.time()
            # Distinct device ids: the accepted suggestion mutes one device, not its twin.
            devices = {quiet: range(1), noisy: range(1, 2)}
            for zone in (quiet, noisy):
                await publish_all(stack.mqtt_url, reports(fleet, zone, devices[zone], 25, later, 1))
            await api.wait("/api/alerts", lambda b: not b["active"])
            again = time.time()
            for zone in (quiet, noisy):
                await publish_all(stack.mqtt_url, reports(fleet, zone, devices[zone], 0, again, 1))
            body = await api.wait("/api/alerts", lambda b: len(b["active"]) == 2)
            states = {a["labels"]["zone"]: a["state"] for a in body["active"]}
            assert states == {quiet: "firing", noisy: "suppressed"}
            _, audit = await api.call("GET", "/api/audit")
            actions = [e["action"] for e in audit["audit"]]
            assert actions[:4] == [
                "maintenance.add",
                "feedback",
                "suppression.add",
                "suggestion.accepted",
            ]
            # Without the token, nothing changes.
            async with session.post(f"{api.base}/api/reload") as resp:
                assert resp.status == 401
    finally:
        await agent.stop()


async def test_sighup_reload_keeps_state_and_a_bad_reload_changes_nothing(
    stack: Stack, influx_db: str, fleet: FleetTopics, tmp_path: Path
) -> None:
    zone = f"r{uuid.uuid4().hex[:8]}"
    agent, path, port = await start(stack, influx_db, fleet, tmp_path, detectors_toml(5))
    t0 = time.time() - 30
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(session, port)
            # 3 of the 5 dark reports the rule needs, then a reload that changes parameters.
            await publish_all(stack.mqtt_url, reports(fleet, zone, range(1), 0.0, t0, 3))
            await api.wait(
                "/api/detectors/camera-dark",
                lambda b: b["detector"]["tracked_devices"] == 1,
            )
            assert (await api.call("GET", "/api/alerts"))[1]["active"] == []
            path.write_text(path.read_text().replace("clear_after = 1", "clear_after = 2"))
            agent.proc.send_signal(signal.SIGHUP)
            body = await api.wait(
                "/api/audit",
                lambda b: any(e["action"] == "config.reload" for e in b["audit"]),
            )
            (entry,) = [e for e in body["audit"] if e["action"] == "config.reload"]
            assert (entry["actor"], entry["carried"]) == ("SIGHUP", ["camera-dark"])
            _, det = await api.call("GET", "/api/detectors/camera-dark")
            assert det["detector"]["params"]["clear_after"] == 2

            # A broken file is refused; the agent keeps running with what it had.
            good = path.read_text()
            path.write_text(good + "\n[[detectors]]\nname = 'x'\ntype = 'no-such-type'\n")
            status, refused = await api.call("POST", "/api/reload", {"author": "ops"})
            assert status == 400
            assert any("no-such-type" in p for p in refused["problems"])
            path.write_text(good.replace("[mqtt]\n", "[mqtt]\nkeepalive_s = 45\n"))
            status, refused = await api.call("POST", "/api/reload", {"author": "ops"})
            assert (status, refused["problems"]) == (
                400,
                ["[mqtt] changed: restart the agent to apply it"],
            )

            # Two more dark reports: the 5th since the start fires, so the state survived.
            await publish_all(stack.mqtt_url, reports(fleet, zone, range(1), 0.0, t0 + 3, 2))
            await api.wait("/api/alerts", lambda b: len(b["active"]) == 1)
            async with session.get(f"{api.base}/metrics") as resp:
                text = await resp.text()
            assert 'sentinel_config_reloads_total{result="ok"} 1.0' in text
            assert 'sentinel_config_reloads_total{result="refused"} 2.0' in text
    finally:
        await agent.stop()


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sentinel.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_operator_commands_drive_the_running_agent(
    stack: Stack, influx_db: str, fleet: FleetTopics, tmp_path: Path
) -> None:
    agent, path, _ = await start(stack, influx_db, fleet, tmp_path, detectors_toml(1))
    try:
        added = await asyncio.to_thread(
            cli,
            path,
            "suppress",
            "add",
            "--match",
            "zone=gerland",
            "--match",
            "detector=camera-*",
            "--for",
            "2h",
            "--reason",
            "works",
            "--author",
            "ops",
            "--maintenance",
        )
        assert added.returncode == 0, added.stderr
        listed = await asyncio.to_thread(cli, path, "suppress", "list", "--json")
        (entry,) = json.loads(listed.stdout)["suppressions"]
        assert (entry["kind"], entry["matchers"]) == (
            "maintenance",
            {"zone": "gerland", "detector": "camera-*"},
        )
        assert entry["ends_at"] - entry["starts_at"] == 7200
        refused = await asyncio.to_thread(
            cli,
            path,
            "suppress",
            "add",
            "--match",
            "topic=x",
            "--for",
            "1h",
            "--reason",
            "r",
            "--author",
            "a",
        )
        assert refused.returncode == 1
        assert "unknown label" in refused.stderr
        shown = await asyncio.to_thread(cli, path, "detectors", "show", "camera-dark", "--json")
        assert json.loads(shown.stdout)["params"]["metric"] == "fps"
        reloaded = await asyncio.to_thread(cli, path, "reload", "--author", "ops")
        assert reloaded.returncode == 0, reloaded.stderr
        assert "kept ['camera-dark']" in reloaded.stdout
        removed = await asyncio.to_thread(
            cli, path, "suppress", "remove", entry["id"], "--author", "ops"
        )
        assert removed.returncode == 0, removed.stderr
        listed = await asyncio.to_thread(cli, path, "suppress", "list", "--json")
        assert json.loads(listed.stdout)["suppressions"] == []
    finally:
        await agent.stop()


async def test_alert_flood_gives_bounded_incidents_and_notifications(
    stack: Stack, influx_db: str, fleet: FleetTopics, tmp_path: Path
) -> None:
    """20,000 devices in 2,000 zones each raise an alert: with at most 20 open incidents and
    5 notices each, Alertmanager sees a bounded number; InfluxDB still gets all 20,000."""
    tenant = f"t{uuid.uuid4().hex[:8]}"
    agent, _, port = await start(
        stack,
        influx_db,
        fleet,
        tmp_path,
        detectors_toml(1),
        alerting="max_open_incidents = 20\nfleet_min_zones = 0",  # zone incidents only
    )
    t0 = time.time() - 30
    flood = [
        (
            fleet.telemetry(tenant, f"z{i % 2000}", "video", f"cam-{i:05d}"),
            orjson.dumps({"ts": t0, "metrics": {"fps": 0}}),
        )
        for i in range(20_000)
    ]
    try:
        await publish_all(stack.mqtt_url, flood)
        async with aiohttp.ClientSession() as session:
            api = Api(session, port)
            incidents = await api.wait(
                "/api/incidents",
                lambda b: sum(i["alerts"] for i in b["incidents"]) == 20_000,
                within_s=60,
            )
            assert len(incidents["incidents"]) == 21  # 20 zones + the overflow incident
            await asyncio.sleep(3)  # let the sink post and resend once
            params = [("filter", f'tenant="{tenant}"')]
            async with session.get(f"{stack.am_url}/api/v2/alerts", params=params) as resp:
                in_am = await resp.json()
            overflow = [
                a
                for a in (await am_alerts(stack, session, "_overflow"))
                if a["labels"].get("incident") in {i["id"] for i in incidents["incidents"]}
            ]
        # Per zone incident: 5 alerts + 1 roll-up at most; the overflow: 5 alerts + 1 roll-up.
        assert len(in_am) + len(overflow) <= 21 * 6
        assert len(in_am) >= 20 * 5
        stored = await poll_rows(
            stack,
            influx_db,
            f"SELECT count(\"fingerprint\") FROM alerts WHERE tenant = '{tenant}'",
            lambda r: bool(r) and r[0]["count"] >= 20_000,
            within_s=30,
        )
        assert stored[0]["count"] == 20_000
    finally:
        await agent.stop()


async def test_cameras_dark_in_four_zones_are_one_fleet_incident(
    stack: Stack, influx_db: str, fleet: FleetTopics, tmp_path: Path
) -> None:
    """Three cameras go dark in each of four zones: the first two zones are notified device
    by device, then one SentinelFleetIncident stands for the campaign (fleet_min_zones = 3)."""
    zones = [f"z{uuid.uuid4().hex[:8]}" for _ in range(4)]
    agent, _, port = await start(stack, influx_db, fleet, tmp_path, detectors_toml(2))
    t0 = time.time() - 60
    dark = [
        msg
        for z, zone in enumerate(zones)
        for msg in reports(fleet, zone, range(3 * z, 3 * z + 3), 0.0, t0, 3)
    ]
    try:
        await publish_all(stack.mqtt_url, dark)
        async with aiohttp.ClientSession() as session:
            api = Api(session, port)
            body = await api.wait(
                "/api/incidents",
                lambda b: any(i["zone"] == "_fleet" and i["alerts"] == 12 for i in b["incidents"]),
            )
            (fleet_incident,) = [i for i in body["incidents"] if i["zone"] == "_fleet"]
            assert (fleet_incident["devices"], fleet_incident["tenant"]) == (12, "lyon")
            assert fleet_incident["zones"] == sorted(zones)
            members = [i for i in body["incidents"] if i["zone"] in zones]
            assert len(members) == 4
            assert {i["fleet"] for i in members} == {fleet_incident["id"]}
            deadline = time.monotonic() + 15
            while not (fleet_notices := await am_alerts(stack, session, "_fleet")) or not any(
                a["labels"].get("incident") == fleet_incident["id"] for a in fleet_notices
            ):
                assert time.monotonic() < deadline, fleet_notices
                await asyncio.sleep(0.3)
            alone = [a for zone in zones for a in await am_alerts(stack, session, zone)]
        mine = [a for a in fleet_notices if a["labels"].get("incident") == fleet_incident["id"]]
        assert [a["labels"]["alertname"] for a in mine] == ["SentinelFleetIncident"]
        assert sorted(a["labels"]["zone"] for a in alone) == sorted(zones[:2] * 3)
        stored = await poll_rows(
            stack,
            influx_db,
            "SELECT \"zones\" FROM incidents WHERE zone = '_fleet' AND "
            f"incident = '{fleet_incident['id']}'",
            bool,
        )
        assert stored[-1]["zones"] == 4
    finally:
        await agent.stop()
