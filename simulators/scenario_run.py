"""Running a scenario: straight to a recording file, or live against a real broker."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from simulators.anomalies import GroundTruth
from simulators.broker_actions import ActionRunner, ActionStats, BrokerCredentials
from simulators.effects import BrokerAction
from simulators.files import write_atomic
from simulators.fleet import Fleet, build_fleet
from simulators.generator import generate
from simulators.inventory import write_inventory
from simulators.messages import DEFAULT_TOPIC_PREFIX, Message, Run, interleave
from simulators.publisher import PublishStats, publish
from simulators.recordfile import RecordingWriter
from simulators.scenario import Compiled, Scenario, compile_scenario, scenario_start


@dataclass(frozen=True)
class ScenarioRun:
    """One scenario made concrete: fleet, span, seed, and the compiled plan with its truth."""

    scenario: Scenario
    fleet: Fleet
    start: float
    end: float
    seed: int
    prefix: str
    compiled: Compiled

    @property
    def truth(self) -> tuple[GroundTruth, ...]:
        return self.compiled.truth

    def messages(self) -> Iterator[Message]:
        return generate(
            self.fleet,
            self.start,
            self.end,
            None,
            self.seed,
            topic_prefix=self.prefix,
            plan=self.compiled.plan,
        )

    def write_truth(self, path: Path) -> None:
        write_atomic(path, "".join(t.to_json() + "\n" for t in self.truth).encode())

    def meta(self) -> dict[str, object]:
        return {
            "source": "simulator",
            "scenario": self.scenario.name,
            "devices": len(self.fleet),
            "seed": self.seed,
            "start": self.start,
            "end": self.end,
            "topic_prefix": self.prefix,
        }


def prepare(
    scenario: Scenario,
    *,
    devices: int | None = None,
    days: float | None = None,
    seed: int | None = None,
    start: float | None = None,
    topic_prefix: str = DEFAULT_TOPIC_PREFIX,
) -> ScenarioRun:
    """The run of `scenario` with the file's defaults unless overridden."""
    n = scenario.run.devices if devices is None else devices
    span_days = scenario.run.days if days is None else days
    s = scenario.run.seed if seed is None else seed
    t0 = scenario_start(scenario) if start is None else start
    t1 = t0 + span_days * 86_400.0
    fleet = build_fleet(n, s)
    compiled = compile_scenario(scenario, fleet, t0, t1, s, topic_prefix=topic_prefix)
    return ScenarioRun(scenario, fleet, t0, t1, s, topic_prefix, compiled)


_Sent = TypeVar("_Sent", Message, Message | Run)


def with_events(
    messages: Iterable[_Sent], actions: Iterable[BrokerAction]
) -> Iterator[_Sent | BrokerAction]:
    """Messages and broker actions merged in time order (actions first on a tie)."""
    return interleave(messages, sorted(actions, key=_action_ts), _action_ts)


def _action_ts(action: BrokerAction) -> float:
    return action.ts


@dataclass(frozen=True)
class FileSummary:
    messages: int
    events: int


def write_recording(
    run: ScenarioRun, path: Path, on_progress: Callable[[int], None] | None = None
) -> FileSummary:
    """Write the run's whole stream to a recording, as a subscriber to `prefix/#` would see
    it, plus what the broker would log for the MQTT-layer actions."""
    with RecordingWriter(path, run.meta()) as out:
        for n, item in enumerate(with_events(run.messages(), run.compiled.plan.actions)):
            if isinstance(item, BrokerAction):
                for ev in item.events():
                    out.write_event(item.ts, ev)
            else:
                out.write(item.ts, item.topic, item.payload, item.qos, item.retain)
            if on_progress is not None and n % 50_000 == 0:
                on_progress(n)
        return FileSummary(out.messages, out.events)


@dataclass(frozen=True)
class LiveSummary:
    publish: PublishStats
    actions: ActionStats


async def run_live(
    run: ScenarioRun,
    *,
    mqtt_url: str,
    creds: BrokerCredentials,
    client_id: str,
    speed: float,
    inventory: Path | None = None,
    on_progress: Callable[[PublishStats], None] | None = None,
) -> LiveSummary:
    """Publish the run through the gateway connection, paced; meanwhile real clients carry out
    the broker actions, the last wills and the operator's commands at their times."""
    if inventory is not None:
        write_inventory(run.fleet, inventory)
    wall_start = time.time() + 1.0
    gateway = (m for m in run.messages() if not m.origin)
    others: list[BrokerAction | Message] = [
        *run.compiled.plan.actions,
        *(m for m in run.compiled.plan.scheduled if m.origin and run.start <= m.ts < run.end),
    ]
    runner = ActionRunner(
        mqtt_url,
        creds,
        others,
        sim_start=run.start,
        wall_start=wall_start,
        speed=speed if math.isfinite(speed) else 1e12,
    )
    runner.start()
    try:
        stats = await publish(
            gateway,
            mqtt_url=mqtt_url,
            username=creds.gateway.username if creds.gateway else None,
            password=creds.gateway.password if creds.gateway else None,
            client_id=client_id,
            speed=speed,
            wall_start=wall_start,
            on_progress=on_progress,
        )
    except BaseException:
        runner.stop()
        raise
    actions = await asyncio.to_thread(runner.join, None)
    return LiveSummary(stats, actions)
