"""What generating the simulator's messages costs, per message: this tree against a git revision.

    .venv/bin/python benchmarks/bench_simulate.py [--baseline REV] [--devices 10000]
        [--minutes 10] [--scenario mirai-recruitment | --plain] [--repeat 3]

Generates the same stream (a scenario's run from the moment its first event starts, or with
`--plain` a fleet without a plan) with the `simulators` package of this working tree and with the
one of revision REV (extracted by `git archive`, imported in a child process), alternating runs so
that both see the same machine load. Prints the CPU time per message of the child process (best and
median of the repeats), their ratio, and whether both streams are byte-identical (sha256 over
every message's fields). Compare with the revision before a change: `--baseline 9d1a487` is the
simulator before the batch encoder.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import simulators
from simulators.fleet import build_fleet
from simulators.generator import generate
from simulators.scenario import load_scenario
from simulators.scenario_run import prepare

REPO = Path(__file__).resolve().parents[1]


def _stream(scenario: str | None, devices: int, minutes: float) -> Iterator[tuple[object, ...]]:
    days = minutes / 1_440
    if scenario is None:
        start = 1_764_374_400.0  # 2025-11-29 00:00 UTC
        return generate(build_fleet(devices, 1), start, start + minutes * 60, None, 1)
    probe = prepare(load_scenario(scenario), devices=devices, days=1.0)
    first = min((t.start for t in probe.truth), default=probe.start)
    return prepare(load_scenario(scenario), devices=devices, days=days, start=first).messages()


def _child(scenario: str | None, devices: int, minutes: float, digest: bool) -> None:
    """One timed generation, printed as JSON (run in a child so the package can differ)."""
    messages = _stream(scenario, devices, minutes)
    # CPU time of this process: other work on a shared machine does not count.
    began = time.process_time()
    counter = deque(enumerate(messages, 1), maxlen=1)  # consumed in C: only the generator timed
    n = counter[0][0] if counter else 0
    seconds = time.process_time() - began
    sha = ""
    if digest:
        h = hashlib.sha256()
        for m in _stream(scenario, devices, minutes):
            h.update(repr(tuple(m)).encode())
        sha = h.hexdigest()
    package = str(Path(simulators.__file__).parent)
    print(json.dumps({"messages": n, "seconds": seconds, "sha256": sha, "package": package}))


def _extract(rev: str, into: Path) -> None:
    """The `simulators` package as it is at `rev` (read from git, the working tree untouched)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev, "simulators"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def _run(pythonpath: Path | None, args: argparse.Namespace, digest: bool) -> dict[str, float | str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    command = [sys.executable, __file__, "--child", "--devices", str(args.devices)]
    command += ["--minutes", str(args.minutes)]
    command += ["--plain"] if args.plain else ["--scenario", args.scenario]
    command += ["--digest"] if digest else []
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True, cwd=REPO)
    result: dict[str, float | str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default="HEAD", help="git revision to compare with")
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--minutes", type=float, default=10.0, help="simulated minutes")
    ap.add_argument("--scenario", default="mirai-recruitment")
    ap.add_argument("--plain", action="store_true", help="a fleet without a scenario")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--digest", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    scenario = None if args.plain else args.scenario
    if args.child:
        _child(scenario, args.devices, args.minutes, args.digest)
        return

    with tempfile.TemporaryDirectory() as tmp:
        _extract(args.baseline, Path(tmp))
        trees = {f"baseline {args.baseline}": Path(tmp), "this tree": None}
        times: dict[str, list[float]] = {name: [] for name in trees}
        digests: dict[str, str] = {}
        count = 0
        for i in range(args.repeat):
            for name, path in trees.items():
                out = _run(path, args, digest=i == 0)
                count = int(out["messages"])
                times[name].append(float(out["seconds"]) / max(count, 1) * 1e6)
                if i == 0:
                    digests[name] = str(out["sha256"])
                    if (path is None) == str(out["package"]).startswith(tmp):
                        raise SystemExit(f"{name}: imported the wrong package {out['package']}")

    what = "plain fleet" if args.plain else f"scenario {args.scenario} from its first event"
    print(
        f"{what}, {args.devices:,} devices, {args.minutes:g} simulated minutes: {count:,} messages"
    )
    for name, per in times.items():
        spread = ", ".join(f"{x:.2f}" for x in per)
        print(
            f"{name:>22}: best {min(per):6.2f} µs/msg, median {statistics.median(per):6.2f}"
            f"  ({spread})"
        )
    old, new = (statistics.median(per) for per in times.values())
    print(f"this tree / baseline (medians): {new / old:.2f}  (x{old / new:.2f} faster)")
    same = len(set(digests.values())) == 1
    print(
        f"byte-identical streams: {'yes' if same else 'NO'} ({next(iter(digests.values()))[:16]})"
    )


if __name__ == "__main__":
    main()
