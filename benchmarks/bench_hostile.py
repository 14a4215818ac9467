"""What hostile input costs the agent: the pipeline's CPU per message for the 20 families of
tests/test_stack_hostile.py (garbage, deep nesting, NaN, oversized, invented ids, valid).

    .venv/bin/python -m benchmarks.bench_hostile [--messages 100000]

Runs `Pipeline.process` in batches of 2,000 with logging at info (as `sentinel run`), storing
nothing (the store only counts), and prints µs per message overall and the time spent making
the messages, so that runs on a noisy machine compare as ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from sentinel import logs
from sentinel.config import Config
from sentinel.evaluation.runner import build_pipeline
from tests.conftest import FleetTopics
from tests.test_stack_hostile import CAP, DEADLETTERS, hostile

BATCH = 2000


async def run(n: int) -> tuple[float, float]:
    fleet = FleetTopics("fleet/bench")
    pattern = fleet.root + "/{tenant}/{zone}/{kind}/{device_id}/"
    cfg = Config(
        mqtt={"telemetry_topic": pattern + "telemetry", "status_topic": pattern + "status"}
    )
    cfg = cfg.model_copy(
        update={
            "validation": cfg.validation.model_copy(update={"max_devices": CAP}),
            "deadletter": cfg.deadletter.model_copy(update={"capacity": DEADLETTERS}),
        }
    )
    pipeline = build_pipeline(cfg)  # as `sentinel eval` builds it: the store only counts
    now = time.time()
    began = time.perf_counter()
    items = [hostile(fleet, i, now)[:2] for i in range(n)]
    made = time.perf_counter() - began
    began = time.perf_counter()
    for start in range(0, n, BATCH):
        await pipeline.process(items[start : start + BATCH], time.time())
    return made / n, (time.perf_counter() - began) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    logs.configure("info")
    made, piped = asyncio.run(run(args.messages))
    print(
        f"{args.messages:,} hostile messages (20 families): pipeline {piped * 1e6:.1f} µs per"
        f" message ({1 / piped:,.0f}/s on one core); making them {made * 1e6:.1f} µs"
    )


if __name__ == "__main__":
    main()
