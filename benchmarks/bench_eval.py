"""How long `sentinel eval` takes for a simulated day of a large fleet.

    .venv/bin/python benchmarks/bench_eval.py [--devices 10000] [--hours 24] [--workers 2]
        [--scenario mirai-recruitment] [--config deploy/sentinel.toml] [--wire]

Runs one scenario on the fleet through the agent's pipeline in simulated time, as `sentinel eval
--scenario NAME --devices N --days H/24 --workers W` does, and prints the wall time, the message
rate, the split between simulating, decoding and the rest of the pipeline (measured on a slice,
one process), and the time a full simulated day takes at that rate. Target: a 10,000-device day
in under 2 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from dataclasses import dataclass
from pathlib import Path

from sentinel.config import load_config
from sentinel.evaluation.runner import build_pipeline, feed, run_scenario, stream_items
from simulators.messages import Run
from simulators.recordfile import BrokerEvent
from simulators.scenario import load_scenario
from simulators.scenario_run import prepare

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Split:
    """Seconds per message of each stage, one process."""

    messages: int
    simulate: float  # messages made and kept
    decode: float  # `Decoder.decode` alone, over the payloads it is given
    pipeline: float  # the whole pipeline: decoding (if any), engine, alert book


def split(scenario: str, devices: int, config: Path, wire: bool) -> Split:
    run = prepare(load_scenario(scenario), devices=devices, days=300 / 86_400)
    began = time.perf_counter()
    gc.disable()  # as `feed` runs the stream: without the collector's passes
    try:
        stream = stream_items(run, broker=False, wire=wire)  # messages only
        items = [i for i in stream if not isinstance(i, BrokerEvent)]
    finally:
        gc.enable()
    sim = time.perf_counter() - began
    cfg = load_config(config)
    decoder = build_pipeline(cfg).decoder
    began = time.perf_counter()
    for item in items:
        if not isinstance(item, Run):  # a run's reports come decoded
            ts, topic, payload = item
            decoder.decode(topic, payload, ts)
    decode = time.perf_counter() - began
    began = time.perf_counter()
    n = asyncio.run(feed(build_pipeline(cfg), items, cfg.pipeline.batch_max)).messages
    pipe = time.perf_counter() - began
    return Split(n, sim / n, decode / n, pipe / n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scenario", default="mirai-recruitment")
    ap.add_argument("--config", type=Path, default=REPO / "deploy" / "sentinel.toml")
    ap.add_argument("--wire", action="store_true", help="as `sentinel eval --wire`")
    args = ap.parse_args()

    s = split(args.scenario, args.devices, args.config, args.wire)
    print(
        f"per message, one process ({s.messages:,} messages, 5 simulated minutes): "
        f"simulate {s.simulate * 1e6:.1f} µs, pipeline {s.pipeline * 1e6:.1f} µs "
        f"(of which decoding {s.decode * 1e6:.1f} µs, the engine and alert book the rest)"
    )
    cfg = load_config(args.config)
    began = time.perf_counter()
    result = run_scenario(
        load_scenario(args.scenario),
        cfg,
        devices=args.devices,
        days=args.hours / 24.0,
        workers=args.workers,
        wire=args.wire,
    )
    wall = time.perf_counter() - began
    per_day = wall * 24.0 / args.hours
    command = (
        f"sentinel eval --scenario {args.scenario} --devices {args.devices} "
        f"--days {args.hours / 24:g} --workers {args.workers} --config {args.config}"
        + (" --wire" if args.wire else "")
    )
    print(f"command: {command}")
    print(
        f"{args.devices:,} devices, {args.hours:g} simulated hours: {result.messages:,} messages "
        f"in {wall:.1f} s wall = {result.messages / wall:,.0f} msg/s with {args.workers} "
        f"worker(s); {len(result.alerts)} alerts"
    )
    print(f"one simulated day at this rate: {per_day:.0f} s ({per_day / 60:.1f} min); target 120 s")


if __name__ == "__main__":
    main()
