"""Agent memory per tracked device, in-process: the agent's own objects (decoder, engine with
every detector of deploy/eval.toml, alert book, dead letters) and its Pipeline, fed one
report from each of N distinct devices through `Pipeline.process` (the agent's per-batch code,
storage replaced by a sink that drops lines). RSS is read from /proc before and after, each
N in a fresh process. Before the first reading, WARMUP reports from WARMUP_DEVICES devices
go through the same path: the batch's transient objects then already count in the baseline
(freed memory stays in Python's arenas), and the difference is the state that grows with N.

What the agent holds per device: the admission set's device id (the device cap); what each
per-device detector keeps (cadence, integrity, identity: their state for every device they
have seen, see `detector_states` in the output); and, for a device past a threshold rule's
line but not yet raised, that rule's run-length state keyed by (tenant, zone, kind,
device_id). Threshold rules keep nothing for a quiet device. Profiles: `quiet` (normal
reports) and `breaching` (each device one point past every rule of its kind that needs several
points to raise, so every such rule keeps its state), and `steady`: normal reports, one per
window of the longest `peer_drift` window, until every `peer_drift` history is full (the state
a long-running agent holds; slow: N x ~50 reports).

    .venv/bin/python -m benchmarks.ingest.memory --devices 1000000 --profile breaching
    .venv/bin/python -m benchmarks.ingest.memory --devices 100000 --profile steady
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from benchmarks.ingest.procstat import rss_bytes
from benchmarks.ingest.stack import REPO
from detectors.drift import PeerDriftParams
from sentinel.agent import Agent
from sentinel.config import Config, load_config
from sentinel.pipeline import Pipeline

EVAL_CONFIG = REPO / "deploy" / "eval.toml"
WARMUP = 20_000
WARMUP_DEVICES = 100
PROFILES = ("quiet", "breaching")  # what the full benchmark runs
STEADY = "steady"
_ZONES = {"lyon": ("part-dieu", "presquile", "gerland"), "villeurbanne": ("la-doua", "centre")}
_TENANTS = tuple(_ZONES)
_NORMAL: dict[str, dict[str, float]] = {
    "lighting": {"on": 1, "dim_pct": 50.0, "power_w": 29.1, "driver_temp_c": 41.0},
    "mobility": {"vehicles": 12, "speed_kmh": 38.5, "occupancy_pct": 22.0},
    "video": {"fps": 25, "upload_kbps": 2908.9, "net_pkts_out": 2692},
}
_NET: dict[str, float] = {
    "net_bytes_out": 476,
    "net_conns": 1,
    "net_dst_ips": 1,
    "net_telnet_attempts": 0,
}
# One point past each rule of eval.toml that needs several points to raise.
_BREACH: dict[str, dict[str, float]] = {
    "lighting": {"driver_temp_c": 95.0, "net_dst_ips": 25},
    "mobility": {"net_dst_ips": 25},
    "video": {"upload_kbps": 20000.0, "net_pkts_out": 20000, "net_dst_ips": 25},
}


def kind_of(i: int) -> str:
    """Half street lights, 30 % mobility, 20 % cameras, as the simulated fleet."""
    r = i % 10
    return "lighting" if r < 5 else ("mobility" if r < 8 else "video")


def report(i: int, profile: str, ts: float, prefix: str = "", seq: int = 1) -> tuple[str, bytes]:
    kind = kind_of(i)
    tenant = _TENANTS[i % len(_TENANTS)]
    zones = _ZONES[tenant]
    device = f"{prefix}{tenant}-{kind[:3]}-{i:07d}"
    metrics = {**_NORMAL[kind], **_NET}
    if profile == "breaching":
        metrics.update(_BREACH[kind])
    body = {"device_id": device, "ts": ts, "seq": seq, "metrics": metrics}
    topic = f"fleet/{tenant}/{zones[i % len(zones)]}/{kind}/{device}/telemetry"
    return topic, orjson.dumps(body)


class _DropLines:
    async def put(self, lines: list[str]) -> None:
        return None


async def fill(devices: int, profile: str) -> dict[str, object]:
    config = load_config(EVAL_CONFIG)
    agent = Agent(config)  # builds the decoder, engine, book and dead letters as `run` does
    pipeline = Pipeline(
        decoder=agent.decoder,
        store=_DropLines(),
        engine=agent.engine,
        book=agent.book,
        notifiers=[],
        metrics=agent.metrics,
        deadletters=agent.deadletters,
        # eval.toml keeps the default cap (200,000): raised to cover N and the warm-up.
        max_devices=devices + WARMUP_DEVICES,
    )
    batch = config.pipeline.batch_max
    now = time.time()
    rounds, spacing = steady_rounds(config) if profile == STEADY else (1, 0.0)
    first = now - 1 - (rounds - 1) * spacing  # the stream's clock never goes back
    for start in range(0, WARMUP, batch):
        warm = [
            report(i % WARMUP_DEVICES, "quiet", first - 1, "warm-")
            for i in range(start, start + batch)
        ]
        await pipeline.process(warm, now)
    del warm
    gc.collect()
    before = rss_bytes(os.getpid())
    kind = "quiet" if profile == STEADY else profile  # steady: quiet reports, many rounds
    for r in range(rounds):
        ts = first + r * spacing
        for start in range(0, devices, batch):
            chunk = [
                report(i, kind, ts, seq=r + 1) for i in range(start, min(devices, start + batch))
            ]
            await pipeline.process(chunk, now)
    del chunk
    gc.collect()
    after = rss_bytes(os.getpid())
    states = {i.source.name: i.detector.tracked_devices() for i in agent.engine.instances}
    return {
        "devices": devices,
        "profile": profile,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_device": (after - before) / devices,
        "admitted": len(pipeline.admission.known) - WARMUP_DEVICES,
        "rejected": sum(pipeline.rejected.values()),
        "detector_states": states,
        "alerts_active": len(agent.book.active),
    }


def steady_rounds(config: Config) -> tuple[int, float]:
    """Reports per device, and their spacing, that fill every `peer_drift` history: one per
    window of the longest window, the longest history plus the window being filled."""
    drift = [
        PeerDriftParams.model_validate(d.params)
        for d in config.detectors
        if d.enabled and d.type == "peer_drift"
    ]
    if not drift:
        return 1, 0.0
    windows = max(max(p.history, p.slope_windows) for p in drift)
    return windows + 2, max(p.window_s for p in drift)


@dataclass(frozen=True)
class MemoryResult:
    devices: int
    profile: str
    rss_before: int
    rss_after: int
    bytes_per_device: float
    admitted: int
    rejected: int
    detector_states: dict[str, int]
    alerts_active: int


def measure(counts: Sequence[int], profiles: Sequence[str] = PROFILES) -> list[MemoryResult]:
    """One fresh process per (N, profile), two at a time (memory, not speed, is measured)."""
    jobs = [(n, p) for n in counts for p in profiles]
    results: list[MemoryResult] = []
    for k in range(0, len(jobs), 2):
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.ingest.memory",
                    "--devices",
                    str(n),
                    "--profile",
                    p,
                ],
                stdout=subprocess.PIPE,
                cwd=REPO,
            )
            for n, p in jobs[k : k + 2]
        ]
        for proc in procs:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"memory probe failed ({proc.returncode})")
            # The last line: anything the agent's code logs comes before it.
            results.append(MemoryResult(**json.loads(out.splitlines()[-1])))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, required=True)
    ap.add_argument("--profile", choices=(*PROFILES, STEADY), default="quiet")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(fill(args.devices, args.profile))))


if __name__ == "__main__":
    main()
