"""The agent's per-message Python work outside the detectors: decoding and line protocol.

    .venv/bin/python benchmarks/bench_decode.py [--devices 1000] [--minutes 30] [--repeat 5]
        [--baseline DIR] [--unique-topics]

Simulates a fleet (the mirai-recruitment scenario, as bench_eval does), keeps its messages,
then times `Decoder.decode` over all of them and `lines_for` over the records, best of
`--repeat` runs, one process. To compare two versions on this noisy machine, run both in the
same minute (e.g. a `git archive` of the old tree with PYTHONPATH pointing at it) and compare
the ratio, or pass `--baseline DIR`: DIR/sentinel/decode.py (e.g. that archive) is loaded
beside the current one and the two decoders are timed in alternation, in this process.
`--unique-topics` gives every message its own device id (topic and payload), as a flood of
invented devices does: no topic is ever seen twice.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from detectors.model import Record
from sentinel.agent import build_decoder
from sentinel.config import load_config
from sentinel.store.lineprotocol import lines_for
from simulators.scenario import load_scenario
from simulators.scenario_run import prepare

REPO = Path(__file__).resolve().parents[1]


def best_of(repeat: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - began)
    return best


def unique(i: int, topic: str, payload: bytes) -> tuple[str, bytes]:
    """The message from a device id of its own."""
    levels = topic.split("/")
    old, levels[-2] = levels[-2], f"{levels[-2]}-u{i}"
    return "/".join(levels), payload.replace(orjson.dumps(old), orjson.dumps(levels[-2]), 1)


def baseline_decoder(tree: Path, config: Any) -> Any:
    """The Decoder of `tree`/sentinel/decode.py, built as the agent builds the current one."""
    spec = importlib.util.spec_from_file_location("baseline_decode", tree / "sentinel/decode.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    current = build_decoder(config)
    return module.Decoder(current.rules, current.telemetry, current.status, current.command)


def fresh(decoder: Any) -> Any:
    return type(decoder)(decoder.rules, decoder.telemetry, decoder.status, decoder.command)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--config", type=Path, default=REPO / "deploy" / "eval.toml")
    ap.add_argument("--baseline", type=Path, help="a tree whose decode.py to compare with")
    ap.add_argument("--unique-topics", action="store_true")
    args = ap.parse_args()

    run = prepare(
        load_scenario("mirai-recruitment"), devices=args.devices, days=args.minutes / 1440
    )
    items = [(m.ts, m.topic, m.payload) for m in run.messages()]
    if args.unique_topics:
        items = [(ts, *unique(i, topic, payload)) for i, (ts, topic, payload) in enumerate(items)]
    config = load_config(args.config)
    decoders = {"decode": build_decoder(config)}
    if args.baseline is not None:
        decoders["baseline decode"] = baseline_decoder(args.baseline, config)
    decoded: list[object] = []
    best = dict.fromkeys(decoders, float("inf"))

    for _ in range(args.repeat):  # alternating, so that both see the same machine load
        for name, built in decoders.items():
            # With unique topics, a fresh decoder each run: no topic seen before.
            decoder = fresh(built) if args.unique_topics else built
            began = time.perf_counter()
            decoded[:] = [decoder.decode(topic, payload, ts + 1) for ts, topic, payload in items]
            best[name] = min(best[name], time.perf_counter() - began)
    records = [r for r in decoded if isinstance(r, Record)]
    lines_s = best_of(args.repeat, lambda: lines_for(records))
    figures = ", ".join(f"{name} {s / len(items) * 1e6:.1f} µs/message" for name, s in best.items())
    if args.baseline is not None:
        figures += f" (ratio {best['decode'] / best['baseline decode']:.2f})"
    print(
        f"{len(items):,} messages ({len(records):,} telemetry records), best of {args.repeat}: "
        f"{figures}, line protocol {lines_s / len(records) * 1e6:.1f} µs/record"
    )


if __name__ == "__main__":
    main()
