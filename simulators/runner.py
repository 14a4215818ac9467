"""One simulation run end to end: fleet, inventory, ground truth, messages, broker."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from simulators.anomalies import AnomalySpec, GroundTruth
from simulators.files import write_atomic
from simulators.fleet import build_fleet
from simulators.generator import generate
from simulators.inventory import write_inventory
from simulators.messages import DEFAULT_TOPIC_PREFIX
from simulators.publisher import PublishStats, publish


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """What `sentinel sim` runs. Defaults: 1,000 devices, 10 minutes in real time.

    `mqtt_url` None (the default) generates the messages without publishing them: a dry run.
    `anomalies` offsets are simulated seconds after the start of the simulated span.
    """

    devices: int = 1_000
    seed: int = 0
    speed: float = 1.0
    duration_s: float = 600.0
    mqtt_url: str | None = None
    username: str | None = "sentinel-sim"
    password: str | None = field(default=None, repr=False)
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    inventory_path: Path | None = None
    anomalies: tuple[AnomalySpec, ...] = ()
    start_ts: float | None = None
    truth_path: Path | None = None
    client_id: str = "sentinel-sim"

    def __post_init__(self) -> None:
        if self.devices < 0:
            raise ValueError(f"devices must be >= 0, got {self.devices}")
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(f"speed must be a finite number > 0, got {self.speed}")
        if not (math.isfinite(self.duration_s) and self.duration_s >= 0):
            raise ValueError(f"duration_s must be >= 0, got {self.duration_s}")


@dataclass(frozen=True, slots=True)
class SimulationSummary:
    devices: int
    messages: int
    sim_start_ts: float
    sim_end_ts: float
    ground_truth: tuple[GroundTruth, ...]
    # None on a dry run.
    publish: PublishStats | None


async def run_simulation(
    cfg: SimulationConfig, on_progress: Callable[[PublishStats], None] | None = None
) -> SimulationSummary:
    """Build the fleet, write the inventory and ground truth (when asked), publish.

    The simulated span lasts `duration_s * speed` and, unless `start_ts` is given, ends at
    wall-clock "now": the agent rejects timestamps more than 5 minutes in the future (and more
    than 7 days in the past, so keep `duration_s * speed` under 7 days). Publishing is paced, so
    the run takes about `duration_s` wall seconds and every payload `ts` is in the past when
    it arrives.
    """
    span = cfg.duration_s * cfg.speed
    start = time.time() - span if cfg.start_ts is None else cfg.start_ts
    end = start + span
    fleet = build_fleet(cfg.devices, cfg.seed)
    anomalies = [spec.resolve(fleet, start) for spec in cfg.anomalies]
    truth = tuple(a.truth for a in anomalies)

    if cfg.inventory_path is not None:
        write_inventory(fleet, cfg.inventory_path)
    if cfg.truth_path is not None:
        write_atomic(cfg.truth_path, "".join(t.to_json() + "\n" for t in truth).encode())

    messages = generate(fleet, start, end, anomalies, cfg.seed, topic_prefix=cfg.topic_prefix)
    if cfg.mqtt_url is None:
        count = await asyncio.to_thread(sum, (1 for _ in messages))
        return SimulationSummary(len(fleet), count, start, end, truth, None)

    stats = await publish(
        messages,
        mqtt_url=cfg.mqtt_url,
        username=cfg.username,
        password=cfg.password,
        client_id=cfg.client_id,
        speed=cfg.speed,
        on_progress=on_progress,
    )
    return SimulationSummary(len(fleet), stats.published, start, end, truth, stats)
