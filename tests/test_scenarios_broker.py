"""MQTT-layer attacks carried out by real clients against the real broker (stack up)."""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from simulators.broker_actions import (
    ActionRunner,
    BrokerCredentials,
    Login,
    clone_connect,
    subscribe_probe,
)
from simulators.effects import BrokerAction
from simulators.fleet import build_fleet
from simulators.messages import Message, last_will
from simulators.mqtt_session import BrokerUrl
from simulators.publisher import publish
from simulators.scenario import load_scenario
from simulators.scenario_run import prepare, run_live
from tests.mqtt_util import client_as
from tests.stack_env import require_stack, secret, stack_dir

pytestmark = pytest.mark.stack


def _log() -> Path:
    return stack_dir() / "logs" / "mosquitto.log"


def _log_since(offset: int) -> str:
    with _log().open("rb") as fh:
        fh.seek(offset)
        return fh.read().decode("utf-8", "replace")


def _creds() -> BrokerCredentials:
    return BrokerCredentials(
        gateway=Login("sentinel-sim", secret("mqtt-sim")),
        operator=Login("sentinel-operator", secret("mqtt-operator")),
        device=Login("probe-dev-1", secret("mqtt-probe-dev-1")),
    )


def test_bruteforce_is_refused_and_logged() -> None:
    env = require_stack("mosquitto")
    offset = _log().stat().st_size
    src = f"127.0.{random.randint(1, 250)}.{random.randint(2, 250)}"
    actions = [
        BrokerAction(
            float(i),
            "bruteforce",
            (("username", f"lyon-lum-{i:05d}"), ("client_id", f"probe-{i}"), ("src_ip", src)),
        )
        for i in range(25)
    ]
    runner = ActionRunner(
        env["STACK_MQTT_URL"],
        _creds(),
        actions,
        sim_start=0.0,
        wall_start=time.time(),
        speed=math.inf,
    )
    runner.start()
    stats = runner.join(60)
    assert stats.counts == {"login_refused": 25}, stats
    time.sleep(0.5)
    log = _log_since(offset)
    # Each attempt: a connection from the attacker's address, and a refusal. Other clients'
    # lines may come in between (the broker is shared), so the two are counted apart.
    attempts = re.findall(rf"New connection from {re.escape(src)}:\d+ on port \d+\.", log)
    assert len(attempts) == 25, log[-2000:]
    assert log.count("disconnected, not authorised.") >= 25, log[-2000:]


async def test_wildcard_subscriptions_with_a_device_login_see_nothing() -> None:
    """Mosquitto 2.0.11 grants `#` and `$SYS/#` to a device login in its SUBACK, logs the
    subscription, and then delivers nothing the ACL does not let that login read."""
    env = require_stack("mosquitto")
    offset = _log().stat().st_size
    url = BrokerUrl.parse(env["STACK_MQTT_URL"])
    cid = f"diag-{uuid.uuid4().hex[:8]}"
    device = _creds().device
    assert device is not None
    probe = asyncio.create_task(
        asyncio.to_thread(subscribe_probe, url, device, cid, ["#", "$SYS/#"], "127.0.0.4", 2.0)
    )
    await asyncio.sleep(0.7)
    # Fleet traffic while the probe listens (an empty retained message leaves nothing behind).
    topic = f"fleet/test-recon-{uuid.uuid4().hex[:8]}/lyon/x/video/cam-1/telemetry"
    await publish(
        [Message(0.0, topic, b'{"ts": 1, "metrics": {"x": 1}}', "cam-1")],
        mqtt_url=env["STACK_MQTT_URL"],
        username="sentinel-sim",
        password=secret("mqtt-sim"),
        client_id=f"traffic-{uuid.uuid4().hex[:8]}",
        speed=math.inf,
    )
    result = await probe
    assert len(result.granted) == 2
    assert result.received == []
    log = _log_since(offset)
    assert f"as {cid} " in log
    assert f"{cid} 0 #" in log
    assert f"{cid} 0 $SYS/#" in log


def test_same_client_id_from_a_new_address_takes_the_session_over() -> None:
    env = require_stack("mosquitto")
    offset = _log().stat().st_size
    url = BrokerUrl.parse(env["STACK_MQTT_URL"])
    cid = f"lyon-lum-{uuid.uuid4().hex[:6]}"
    assert clone_connect(url, _creds().device, cid, "127.0.0.2")  # type: ignore[arg-type]
    time.sleep(0.5)
    log = _log_since(offset)
    assert re.search(rf"New client connected from 127\.0\.0\.2:\d+ as {cid}", log), log[-1500:]


async def test_last_will_and_operator_commands_reach_subscribers() -> None:
    env = require_stack("mosquitto")
    url = env["STACK_MQTT_URL"]
    # The operator's ACL allows fleet/+/+/+/+/command: the test's tenant level is unique.
    tenant = f"t{uuid.uuid4().hex[:10]}"
    device = build_fleet(5, 1).of_kind("video")[0]
    will = last_will("fleet", replace(device, tenant=tenant), 0.0)
    command = Message(
        0.0,
        will.topic.replace("/status", "/command"),
        b'{"cmd":"reboot"}',
        device.device_id,
        1,
        False,
        "operator:night-script",
    )
    root = f"fleet/{tenant}"
    got: list[tuple[str, bytes]] = []
    async with client_as(url, "operator", identifier=f"watch-{uuid.uuid4().hex[:8]}") as watcher:
        await watcher.subscribe(f"{root}/#", qos=1)
        runner = ActionRunner(
            url, _creds(), [will, command], sim_start=0.0, wall_start=time.time(), speed=1.0
        )
        runner.start()
        stats = await asyncio.to_thread(runner.join, 30)

        async def collect() -> None:
            async for m in watcher.messages:
                assert isinstance(m.payload, bytes)
                got.append((str(m.topic), m.payload))
                if len(got) >= 2:
                    return

        await asyncio.wait_for(collect(), 10)
    await publish(
        [Message(0.0, will.topic, b"", "-", 1, True)],
        mqtt_url=url,
        username="sentinel-sim",
        password=secret("mqtt-sim"),
        client_id=f"clean-{uuid.uuid4().hex[:8]}",
        speed=math.inf,
    )
    assert stats.counts == {"will_dropped": 1, "command_published": 1}
    assert (will.topic, b"offline") in got
    assert (command.topic, command.payload) in got


async def test_live_scenario_performs_its_mqtt_layer_attacks() -> None:
    env = require_stack("mosquitto")
    root = f"fleet/test-live-{uuid.uuid4().hex[:8]}"
    offset = _log().stat().st_size
    for name, expected in (
        (
            "mqtt-reconnaissance",
            {"subscribe_granted": 2, "subscribe_refused": 0, "subscribe_messages_received": 0},
        ),
        ("command-abuse", None),
    ):
        sc = load_scenario(name)
        nominal = prepare(sc, devices=40)
        t = nominal.truth[0]
        # The span ends now, so the agent would accept every timestamp; events keep their
        # wall-clock times by starting the span a few minutes before the first one.
        run = prepare(sc, devices=40, start=t.start - 60, days=900 / 86_400, topic_prefix=root)
        live = await run_live(
            run,
            mqtt_url=env["STACK_MQTT_URL"],
            creds=_creds(),
            client_id=f"live-{uuid.uuid4().hex[:8]}",
            speed=math.inf,
        )
        assert live.publish.published == live.publish.acked > 0
        if expected is not None:
            assert dict(live.actions.counts) == expected
        else:
            assert live.actions.counts["command_published"] == len(run.truth[0].devices)
        assert not live.actions.errors
    assert re.search(r"-diag 0 \$SYS/#", _log_since(offset))
