"""The agent's per-message Python work outside the detectors: decoding and line protocol.

    .venv/bin/python benchmarks/bench_decode.py [--devices 1000] [--minutes 30] [--repeat 5]

Simulates a fleet (the mirai-recruitment scenario, as bench_eval does), keeps its messages,
then times `Decoder.decode` over all of them and `lines_for` over the records, best of
`--repeat` runs, one process. To compare two versions on this noisy machine, run both in the
same minute (e.g. a `git archive` of the old tree with PYTHONPATH pointing at it) and compare
the ratio.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from detectors.model import Record
from sentinel.config import load_config
from sentinel.evaluation.runner import build_pipeline
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--config", type=Path, default=REPO / "deploy" / "eval.toml")
    args = ap.parse_args()

    run = prepare(
        load_scenario("mirai-recruitment"), devices=args.devices, days=args.minutes / 1440
    )
    items = [(m.ts, m.topic, m.payload) for m in run.messages()]
    decoder = build_pipeline(load_config(args.config)).decoder
    decoded: list[object] = []

    def decode() -> None:
        decoded[:] = [decoder.decode(topic, payload, ts + 1) for ts, topic, payload in items]

    decode_s = best_of(args.repeat, decode)
    records = [r for r in decoded if isinstance(r, Record)]
    lines_s = best_of(args.repeat, lambda: lines_for(records))
    print(
        f"{len(items):,} messages ({len(records):,} telemetry records), best of {args.repeat}: "
        f"decode {decode_s / len(items) * 1e6:.1f} µs/message, "
        f"line protocol {lines_s / len(records) * 1e6:.1f} µs/record"
    )


if __name__ == "__main__":
    main()
