"""The injected camera anomaly, end to end: simulator → Mosquitto → agent → Alertmanager,
with the real Prometheus scraping the agent."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest

from simulators.anomalies import AnomalySpec
from simulators.fleet import build_fleet
from simulators.runner import SimulationConfig, run_simulation
from tests.conftest import FleetTopics, Stack, agent_config, running_agent
from tests.mqtt_util import client_as
from tests.stack_env import secret

pytestmark = pytest.mark.stack

THRESHOLD = 15_000.0


@dataclass
class Timeline:
    """Wall-clock times of what the test saw happen."""

    first_anomalous: float | None = None
    first_normal_after: float | None = None
    alert_seen: float | None = None
    alert_gone: float | None = None
    alert: dict[str, object] = field(default_factory=dict)


async def watch_camera(stack: Stack, topic: str, seen: Timeline) -> None:
    """Observe the camera's messages on the broker, as the SOC's second pair of eyes."""
    async with client_as(
        stack.mqtt_url, "agent", identifier=f"watch-{uuid.uuid4().hex[:8]}"
    ) as client:
        await client.subscribe(topic, qos=1)
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            upload = orjson.loads(message.payload)["metrics"]["upload_kbps"]
            if upload > THRESHOLD and seen.first_anomalous is None:
                seen.first_anomalous = time.time()
            elif upload <= THRESHOLD and seen.first_anomalous and not seen.first_normal_after:
                seen.first_normal_after = time.time()


async def watch_alertmanager(stack: Stack, device_id: str, detector: str, seen: Timeline) -> None:
    url = f"{stack.am_url}/api/v2/alerts"
    params = [("filter", f'device_id="{device_id}"'), ("filter", f'detector="{detector}"')]
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(url, params=params) as resp:
                alerts = await resp.json()
            now = time.time()
            active = [a for a in alerts if a["status"]["state"] == "active"]
            if active and seen.alert_seen is None:
                seen.alert_seen, seen.alert = now, active[0]
            elif not active and seen.alert_seen is not None and seen.alert_gone is None:
                seen.alert_gone = now
            await asyncio.sleep(0.1)


async def prometheus_value(stack: Stack, query: str) -> float | None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{stack.prom_url}/api/v1/query", params={"query": query}) as resp,
    ):
        result = (await resp.json())["data"]["result"]
    return float(result[0]["value"][1]) if result else None


async def test_camera_anomaly_alerts_within_5s_resolves_and_prometheus_counts_it(
    stack: Stack, influx_db: str, fleet: FleetTopics
) -> None:
    detector = f"camera-upload-surge-{uuid.uuid4().hex[:6]}"
    cfg = agent_config(
        stack,
        influx_db,
        fleet.root,
        http_port=stack.agent_port,
        detectors=[
            {
                "name": detector,
                "type": "threshold",
                "kinds": ["video"],
                "severity": "critical",
                "params": {
                    "metric": "upload_kbps",
                    "op": ">",
                    "value": THRESHOLD,
                    "raise_after": 3,
                    "clear_after": 3,
                },
            }
        ],
    )
    devices, seed, speed = 30, 3, 30.0
    camera = build_fleet(devices, seed).of_kind("video")[0]
    sim = SimulationConfig(
        devices=devices,
        seed=seed,
        speed=speed,
        duration_s=30.0,
        mqtt_url=stack.mqtt_url,
        password=secret("mqtt-sim"),
        topic_prefix=fleet.root,
        client_id=f"sim-{detector}",
        anomalies=(AnomalySpec(camera.device_id, start_offset_s=240, duration_s=300),),
    )
    seen = Timeline()
    series = f'sentinel_alerts_total{{detector="{detector}"}}'
    async with running_agent(cfg):
        before = await prometheus_value(stack, series)
        camera_topic = fleet.telemetry(camera.tenant, camera.zone, "video", camera.device_id)
        watchers = [
            asyncio.create_task(watch_camera(stack, camera_topic, seen)),
            asyncio.create_task(watch_alertmanager(stack, camera.device_id, detector, seen)),
        ]
        await asyncio.sleep(0.5)  # the watchers subscribe before the simulator starts
        summary = await run_simulation(sim)
        deadline = time.monotonic() + 20
        after = before
        while time.monotonic() < deadline and not (after and after >= 1 and seen.alert_gone):
            await asyncio.sleep(0.5)
            after = await prometheus_value(stack, series)
        for task in watchers:
            task.cancel()
    truth = summary.ground_truth[0]
    assert truth.device_id == camera.device_id
    assert seen.first_anomalous is not None, "the simulator never sent the anomaly"
    assert seen.alert_seen is not None, "no alert reached Alertmanager"
    latency = seen.alert_seen - seen.first_anomalous
    print(f"first anomalous message -> alert in Alertmanager: {latency:.2f} s")
    assert latency <= 5.0
    labels = seen.alert["labels"]
    assert isinstance(labels, dict)
    assert {k: labels[k] for k in ("tenant", "zone", "kind", "device_id", "severity")} == {
        "tenant": camera.tenant,
        "zone": camera.zone,
        "kind": "video",
        "device_id": camera.device_id,
        "severity": "critical",
    }
    assert labels["alertname"].startswith("CameraUploadSurge")
    annotations = seen.alert["annotations"]
    assert isinstance(annotations, dict)
    assert orjson.loads(annotations["evidence"])["value"] > THRESHOLD
    assert seen.first_normal_after is not None
    assert seen.alert_gone is not None, "the alert did not resolve after the anomaly ended"
    assert seen.alert_gone > seen.first_normal_after
    assert before in (None, 0.0)
    assert after is not None
    assert after >= 1.0
