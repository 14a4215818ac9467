"""Whether two trees give the same eval alerts, and how long each takes.

    .venv/bin/python benchmarks/compare_eval.py --baseline DIR [--scenario all] [--devices 300]
        [--days 1] [--seed S] [--workers 1] [--config deploy/eval.toml] [-- EXTRA EVAL ARGS]

For a change meant to keep behaviour (a faster detector, decoder or simulator): the old tree
(`git archive REV | tar -x -C DIR`) and this one run `sentinel eval --json` on the same
scenarios in two processes at once, so both see the same load. Every run's messages, rejection
counts and alerts (detector, device, start, end, severity, summary, names) are compared. It
prints both wall times and their ratio, then "identical" or the first differences, and exits 1
on a difference. A relative `--config` is each tree's own file (a changed config is part of a
change); an absolute one is shared. Arguments after `--` go to this tree's eval only (e.g.
`--wire`, which older trees lack).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# What must not change between the trees, per run.
RUN_KEYS = ("name", "devices", "seed", "messages", "rejected", "broker_events", "alerts")


def start_eval(tree: Path, args: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.Popen(
        [sys.executable, "-m", "sentinel.cli", "eval", "--json", *args],
        cwd=tree,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen[bytes], tree: Path) -> dict[str, Any]:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"eval failed in {tree}:\n{err.decode(errors='replace')[-2000:]}")
    text = out.decode()
    doc: dict[str, Any] = json.loads(text[text.index("{") :])
    return doc


def differences(old: dict[str, Any], new: dict[str, Any], limit: int = 10) -> list[str]:
    """The first `limit` differences between two eval documents' runs."""
    found: list[str] = []
    if len(old["runs"]) != len(new["runs"]):
        return [f"{len(old['runs'])} runs against {len(new['runs'])}"]
    for a, b in zip(old["runs"], new["runs"], strict=True):
        for key in RUN_KEYS:
            if key == "alerts" or a.get(key) == b.get(key):
                continue
            found.append(f"{a['name']}: {key} {a.get(key)!r} -> {b.get(key)!r}")
        gone = [x for x in a["alerts"] if x not in b["alerts"]]
        new_ones = [x for x in b["alerts"] if x not in a["alerts"]]
        found += [f"{a['name']}: only in the baseline: {x}" for x in gone]
        found += [f"{a['name']}: only in this tree: {x}" for x in new_ones]
        if not gone and not new_ones and a["alerts"] != b["alerts"]:
            found.append(f"{a['name']}: the same alerts in another order")
    return found[:limit]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", type=Path, required=True, help="the other tree")
    ap.add_argument("--scenario", action="append", help="repeatable; default: all")
    ap.add_argument("--devices", type=int, default=300)
    ap.add_argument("--days", type=float, default=1.0)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--config", default="deploy/eval.toml")
    args = ap.parse_args(argv)

    common = [f"--devices={args.devices}", f"--days={args.days}", f"--workers={args.workers}"]
    common += [f"--config={args.config}"]
    common += [f"--scenario={s}" for s in args.scenario or ["all"]]
    common += [f"--seed={args.seed}"] if args.seed is not None else []
    began = time.perf_counter()
    baseline = start_eval(args.baseline.resolve(), common)
    current = start_eval(REPO, [*common, *extra])
    old = finish(baseline, args.baseline)
    new = finish(current, REPO)
    wall = time.perf_counter() - began
    old_s = sum(r["wall_s"] for r in old["runs"])
    new_s = sum(r["wall_s"] for r in new["runs"])
    print(f"eval {' '.join(common + extra)}  ({wall:.0f} s in all)")
    print(f"baseline {old_s:.1f} s, this tree {new_s:.1f} s: {new_s / old_s:.2f}x")
    found = differences(old, new)
    alerts = sum(len(r["alerts"]) for r in new["runs"])
    if not found:
        print(f"identical: {len(new['runs'])} runs, {alerts} alerts")
        return 0
    print("DIFFERENT:")
    for line in found:
        print(f"  {line}")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
