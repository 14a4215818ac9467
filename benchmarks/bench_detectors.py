"""Per-message cost of the per-device stream detectors, side by side with another tree.

    .venv/bin/python benchmarks/bench_detectors.py [--devices 2000] [--minutes 15] [--repeat 7]
        [--compare /tmp/det-ref]

Simulates a fleet (the mirai-recruitment scenario, as bench_decode does), decodes its messages
once into records and commands, cuts them into the pipeline's batches (`batch_max`) and hands
each stream detector of `--config` exactly what the engine would: its kinds' records, in
arrival order, and the commands. Each run times one fresh detector over the whole stream (CPU
time of the process); the figure is the best run's µs per message of the stream.

`--compare DIR` measures the same stream with the detectors of another tree (e.g. a
`git archive` of HEAD unpacked in DIR): one worker process per tree, asked in turn for one
run of one detector at a time, so that both see the same background load. It prints both
columns and their ratio: on this noisy machine only a side-by-side ratio means something.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STREAM_TYPES = ("integrity", "cadence", "identity", "inventory", "commands")

Runner = Callable[[str], float]  # detector name -> seconds of CPU for one run


def prepare(
    tree: Path, devices: int, minutes: float, config: Path
) -> tuple[int, dict[str, Runner]]:
    """The stream's size, and one timed run per stream detector, with the code of `tree`."""
    # Imported here, after the tree is put first on the path: the same script measures either.
    sys.path.insert(0, str(tree))
    import detectors  # noqa: PLC0415
    from detectors.model import CommandRecord, Record  # noqa: PLC0415
    from sentinel.config import load_config  # noqa: PLC0415
    from sentinel.engine import build_instances  # noqa: PLC0415
    from sentinel.evaluation.runner import build_pipeline  # noqa: PLC0415
    from simulators.scenario import load_scenario  # noqa: PLC0415
    from simulators.scenario_run import prepare as prepare_run  # noqa: PLC0415

    if not Path(detectors.__file__ or "").resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"the detectors come from {detectors.__file__}, not from {tree}")
    cfg = load_config(config)
    run = prepare_run(load_scenario("mirai-recruitment"), devices=devices, days=minutes / 1440)
    items = [(m.ts, m.topic, m.payload) for m in run.messages()]
    decoder = build_pipeline(cfg).decoder
    batches: list[tuple[list[Record], list[CommandRecord]]] = []
    for start in range(0, len(items), cfg.pipeline.batch_max):
        chunk = items[start : start + cfg.pipeline.batch_max]
        out = [decoder.decode(topic, payload, chunk[-1][0]) for _, topic, payload in chunk]
        records = [r for r in out if isinstance(r, Record)]
        batches.append((records, [c for c in out if isinstance(c, CommandRecord)]))
    configs = {d.name: d for d in cfg.detectors if d.type in STREAM_TYPES and d.enabled}

    def one_run(name: str) -> float:
        dcfg = configs[name]
        kinds = frozenset(dcfg.kinds)
        detector: Any = build_instances([dcfg])[0].detector
        # What the engine hands it, prepared outside the timing.
        mine = [
            ([r for r in rs if r.device.kind in kinds], [c for c in cs if c.device.kind in kinds])
            for rs, cs in batches
        ]
        began = time.process_time()
        for records, commands in mine:
            if records:
                detector.update(records)
            if commands:
                detector.update_commands(commands)
        return time.process_time() - began

    return len(items), dict.fromkeys(configs, one_run)


def serve(args: argparse.Namespace) -> None:
    """Worker: announce the stream, then answer each detector name read with one run's time."""
    n, runners = prepare(args.tree, args.devices, args.minutes, args.config)
    print(json.dumps({"messages": n, "detectors": list(runners)}), flush=True)
    for line in sys.stdin:
        name = line.strip()
        print(json.dumps(runners[name](name)), flush=True)


class Worker:
    def __init__(self, tree: Path, args: argparse.Namespace) -> None:
        cmd = [
            sys.executable,
            __file__,
            "--serve",
            "--tree",
            str(tree),
            "--config",
            str(args.config),
        ]
        cmd += ["--devices", str(args.devices), "--minutes", str(args.minutes)]
        self.proc = subprocess.Popen(
            cmd, cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        hello = json.loads(self._line())
        self.messages: int = hello["messages"]
        self.detectors: list[str] = hello["detectors"]

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker exited with {self.proc.wait()}")
        return line

    def run(self, name: str) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        seconds: float = json.loads(self._line())
        return seconds

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--config", type=Path, default=REPO / "deploy" / "eval.toml")
    ap.add_argument("--compare", type=Path, help="another tree, measured side by side")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tree", type=Path, default=REPO, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.config = args.config.resolve()
    if args.serve:
        serve(args)
        return
    trees = [REPO] if args.compare is None else [args.compare.resolve(), REPO]
    workers = [Worker(tree, args) for tree in trees]
    names, n = workers[-1].detectors, workers[-1].messages
    if any(w.messages != n or w.detectors != names for w in workers):
        raise SystemExit("the trees simulate different streams: compare the same scenario")
    best = [dict.fromkeys(names, float("inf")) for _ in workers]
    try:
        for r in range(args.repeat):
            for name in names:
                # Alternate which tree goes first: neither always runs right after the other.
                order = range(len(workers)) if r % 2 == 0 else reversed(range(len(workers)))
                for i in order:
                    best[i][name] = min(best[i][name], workers[i].run(name))
    finally:
        for w in workers:
            w.close()
    us = [{k: s / n * 1e6 for k, s in b.items()} for b in best]
    print(f"{n:,} messages; CPU µs per message, best of {args.repeat} runs per detector")
    if len(us) == 1:
        for name in names:
            print(f"{name:<12} {us[0][name]:7.2f}")
        print(f"{'sum':<12} {sum(us[0].values()):7.2f}")
        return
    other, here = us
    print(f"{'detector':<12} {'compare':>8} {'this':>8} {'ratio':>6}")
    for name in names:
        print(f"{name:<12} {other[name]:8.2f} {here[name]:8.2f} {here[name] / other[name]:6.2f}")
    total, total_other = sum(here.values()), sum(other.values())
    print(f"{'sum':<12} {total_other:8.2f} {total:8.2f} {total / total_other:6.2f}")


if __name__ == "__main__":
    main()
