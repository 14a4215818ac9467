"""Run the whole ingest benchmark (issue 8, items 1 to 4) and print one table.

    .venv/bin/python -m benchmarks.ingest [--messages 200000] [--devices 10000] [--rate 5000]
        [--out benchmarks/results/ingest.json]
    .venv/bin/python -m benchmarks.ingest --messages 50000 --profile agent.prof [--client paho]

Needs the local stack (deploy/local/stack up) and, as root with apt, installs
prometheus-mqtt-exporter when missing. Receivers run one at a time, each on the same recorded
stream: first all four at the fixed rate, then all four flat out. The four: mosquitto_sub,
prometheus-mqtt-exporter, and the agent twice, once per MQTT reader (`[mqtt] client` = "paho"
and "native").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pstats
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import orjson

from benchmarks.ingest import influx_writes, measure, memory, stream
from benchmarks.ingest.latency import POLL_S, LatencyProbe, pick_rule
from benchmarks.ingest.measure import RunResult
from benchmarks.ingest.receiver import Receiver
from benchmarks.ingest.recv_agent import EVAL_CONFIG, AgentReceiver
from benchmarks.ingest.recv_exporter import Exporter, ensure_installed
from benchmarks.ingest.recv_mosquitto import MosquittoSub
from benchmarks.ingest.report import Latency, Report
from benchmarks.ingest.stack import REPO, BenchError, Stack
from sentinel.config import load_config

PROFILE_TOP = 15
CLIENTS: tuple[Literal["paho", "native"], ...] = ("paho", "native")


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=5_000.0, help="the fixed rate, msg/s")
    ap.add_argument("--anomalies", type=int, default=20)
    ap.add_argument(
        "--memory-devices", type=int, nargs="*", default=[100_000, 1_000_000],
        help="fleet sizes for the memory probe (none: skip it)",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ingest.json")
    ap.add_argument(
        "--profile", type=Path, help="instead: run the agent alone under cProfile, flat out, "
        "write the stats here and print the top entries (no figures, no JSON)",
    )  # fmt: skip
    ap.add_argument(
        "--client", choices=CLIENTS, default="native",
        help="with --profile: the agent's MQTT reader",
    )  # fmt: skip
    return ap.parse_args(argv)


def profile_top(path: Path, n: int) -> list[str]:
    stats = pstats.Stats(str(path))
    rows = []
    for func, (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((tottime, calls, cumtime, func))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    out = [f"{'tottime s':>10}{'share':>7}{'calls':>11}{'cumtime s':>10}  function"]
    for tottime, calls, cumtime, (file, line, name) in rows[:n]:
        where = file.replace(str(REPO) + "/", "")
        out.append(
            f"{tottime:>10.2f}{tottime / total:>7.1%}{calls:>11,}{cumtime:>10.2f}  "
            f"{name} ({Path(where).name}:{line})"
        )
    return out


def fields_of(s: stream.Stream) -> dict[str, str]:
    """A field every point of each measurement has, to count points in InfluxDB."""
    return dict.fromkeys(stream.telemetry_kinds(s), "seq") | {"device_status": "online"}


def metric_names_of(s: stream.Stream) -> list[str]:
    """Every name under the telemetry payloads' `metrics` (the numbers the agent stores)."""
    names: set[str] = set()
    for topic, payload in s.messages:
        if topic.endswith("/telemetry"):
            names.update(orjson.loads(payload).get("metrics", {}))
    return sorted(names)


async def prepare(args: argparse.Namespace, work: Path) -> stream.Stream:
    began = time.perf_counter()
    path = work / "stream.jsonl.gz"
    stream.record(path, args.messages, args.devices, args.seed)
    s = stream.load(path, args.devices, load_config(EVAL_CONFIG))
    print(
        f"recorded {len(s.messages):,} messages to {path.name} "
        f"({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - began:.1f} s",
        flush=True,
    )
    return s


async def profile(args: argparse.Namespace, stack: Stack, work: Path) -> list[str]:
    """One agent run under cProfile, flat out: where the agent's time goes."""
    s = await prepare(args, work)
    out = args.profile.resolve()
    result = await measure.run(
        AgentReceiver(stack, work, fields_of(s), out, args.client), stack, s.messages, None
    )
    return [
        f"the agent ([mqtt] client = {args.client}) under cProfile (so slower than measured "
        f"runs), flat out, "
        f"{result.received:,} of {result.expected:,} messages; stats in {args.profile}",
        "top by own time:",
        *profile_top(out, PROFILE_TOP),
    ]


async def measure_all(args: argparse.Namespace, stack: Stack, work: Path) -> Report:
    config = load_config(EVAL_CONFIG)
    command = "cd /work/main && .venv/bin/python -m benchmarks.ingest " + shlex.join(sys.argv[1:])
    s = await prepare(args, work)
    fields, metric_names = fields_of(s), metric_names_of(s)
    rule = pick_rule(config)
    runs: list[RunResult] = []
    latency: dict[str, Latency] = {}
    for rate in (args.rate, None):
        receivers: list[Receiver] = [
            MosquittoSub(stack, work),
            Exporter(stack, work, metric_names),
            *(AgentReceiver(stack, work, fields, client=c) for c in CLIENTS),
        ]
        for receiver in receivers:
            side: LatencyProbe | None = None
            if isinstance(receiver, AgentReceiver) and rate is not None:
                duration = len(s.messages) / rate
                side = LatencyProbe(
                    stack, rule, args.anomalies, delay_s=0.1 * duration,
                    spacing_s=0.8 * duration / max(1, args.anomalies),
                    stream_clock=stream.device_clock(s, rate),
                )  # fmt: skip
            result = await measure.run(receiver, stack, s.messages, rate, side)
            if "influx_points" in result.details:
                extra = result.expected - len(s.messages)
                result.details["influx_expected"] = s.expected_points + extra
            runs.append(result)
            if side is not None:
                latency[receiver.name] = Latency(side.latencies, side.missing)
            print(
                f"{result.receiver} at {stream_rate(rate)}: {result.received:,}/"
                f"{result.expected:,} received, {result.cpu_us_per_msg or 0:.1f} µs/msg, "
                f"{result.msgs_per_s or 0:,.0f} msg/s",
                flush=True,
            )
    # The same rule on an agent with no other traffic: the pipeline's own latency.
    idle: dict[str, Latency] = {}
    for client in CLIENTS:
        agent = AgentReceiver(stack, work, fields, client=client)
        probe = LatencyProbe(stack, rule, args.anomalies, delay_s=0.5, spacing_s=0.25)
        await measure.run(agent, stack, [], None, probe)
        idle[agent.name] = Latency(probe.latencies, probe.missing)
        print(
            f"{agent.name}, idle latency: {len(probe.latencies)} of {args.anomalies} alerts seen",
            flush=True,
        )
    writes = await influx_writes.compare(
        stack, s.lines, config.influxdb.batch_size, config.pipeline.batch_max, work
    )
    print("InfluxDB writes done", flush=True)
    mem = await asyncio.to_thread(memory.measure, args.memory_devices)
    return Report(
        command=command,
        stream={
            "messages": len(s.messages),
            "devices": s.devices,
            "bytes": s.bytes,
            "expected_points": s.expected_points,
            "rejected_by_decoder": s.rejected,
            "broker": stack.mqtt_url,
            "fixed_rate": args.rate,
            "batch_size": config.influxdb.batch_size,
            "config": str(EVAL_CONFIG.relative_to(REPO)),
            "exporter_fields": len(metric_names),
        },
        runs=runs,
        latency=latency,
        idle=idle,
        latency_rule=(
            f"{args.anomalies} devices, rule {rule.detector}: {rule.metric} on {rule.kind}, "
            f"one point raises; Alertmanager polled every {POLL_S * 1000:.0f} ms"
        ),
        memory=mem,
        writes=writes,
    )


async def main(args: argparse.Namespace) -> Report | list[str]:
    stack = Stack.load()
    ensure_installed()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        if args.profile is not None:
            return await profile(args, stack, Path(tmp))
        return await measure_all(args, stack, Path(tmp))


def stream_rate(rate: float | None) -> str:
    return "max rate" if rate is None else f"{rate:,.0f} msg/s"


def cli() -> None:
    args = parse_args(sys.argv[1:])
    try:
        report = asyncio.run(main(args))
    except BenchError as exc:
        print(f"benchmarks.ingest: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if isinstance(report, list):  # --profile: no measured figures, nothing written
        print("\n".join(report))
        return
    print("\n".join(report.lines()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    cli()
