"""The benchmark's stream: the simulator's fleet recorded once to a file, then published
through the stack's Mosquitto under a fresh topic root per run, at a fixed rate or flat out.

Recorded under `fleet/`; each run replaces that root with its own (so that no earlier
receiver's persistent session, nor anyone else's subscription, sees it). Statuses are
published without the retain flag: retained messages would stay on the shared broker and be
delivered again to every later subscriber of the root.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import orjson

from detectors.model import Record, StatusRecord
from sentinel.agent import build_decoder
from sentinel.config import Config
from sentinel.decode import Rejection
from sentinel.store.lineprotocol import lines_for
from simulators.fleet import build_fleet
from simulators.generator import generate
from simulators.messages import Message
from simulators.publisher import PublishStats, publish
from simulators.recordfile import RecordingWriter, open_recording

ROOT = "fleet"
# The span ends this long before now: payload clocks run up to 0.5 s ahead.
_END_MARGIN_S = 5.0


@dataclass(frozen=True)
class Stream:
    path: Path
    devices: int
    messages: list[tuple[str, bytes]]  # (topic under ROOT, payload), in recorded order
    lines: list[str]  # what the agent stores for them (line protocol)
    expected_points: int  # distinct points among `lines`: what InfluxDB should end up holding
    rejected: int  # messages the agent's decoder refuses (should be 0)

    @property
    def bytes(self) -> int:
        return sum(len(p) for _t, p in self.messages)


def span_for(messages: int, cadences: list[int]) -> float:
    """Seconds of simulated time in which a fleet with these cadences sends `messages`,
    plus one longest cadence (each device's first report waits for its phase)."""
    per_second = sum(1.0 / c for c in cadences)
    return math.ceil(round(messages / per_second, 6)) + max(cadences)


def record(path: Path, messages: int, devices: int, seed: int) -> int:
    """Write the first `messages` of the fleet's stream (span ending now) to a recording."""
    fleet = build_fleet(devices, seed)
    end = time.time() - _END_MARGIN_S
    start = end - span_for(messages, [d.cadence_s for d in fleet])
    stream = generate(fleet, start, end, None, seed, topic_prefix=ROOT)
    meta = {"source": "simulator", "devices": devices, "seed": seed, "benchmark": "ingest"}
    with RecordingWriter(path, meta) as out:
        for m in islice(stream, messages):
            out.write(m.ts, m.topic, m.payload, m.qos, m.retain)
        written = out.messages
    if written < messages:
        raise ValueError(f"the simulator gave {written} messages, fewer than {messages}")
    return written


def load(path: Path, devices: int, config: Config) -> Stream:
    """Read the recording back, and decode it as the agent would to know what it stores."""
    messages = [(m.topic, m.payload) for m in open_recording(path).messages()]
    decoder = build_decoder(config)
    now = time.time()
    decoded: list[Record | StatusRecord] = []
    rejected = 0
    for topic, payload in messages:
        out = decoder.decode(topic, payload, now)
        if isinstance(out, Rejection):
            rejected += 1
        elif isinstance(out, Record | StatusRecord):  # what the agent stores as points
            decoded.append(out)
    lines = lines_for(decoded)
    return Stream(path, devices, messages, lines, distinct_points(lines), rejected)


def distinct_points(lines: list[str]) -> int:
    """InfluxDB keeps one point per series and timestamp: a repeat overwrites."""
    return len({(line[: line.index(" ")], line[line.rindex(" ") :]) for line in lines})


def device_clock(stream: Stream, rate: float) -> Callable[[float], float]:
    """Seconds since a run at `rate` began -> the payload time of the message due then."""
    stamps = [float(orjson.loads(payload)["ts"]) for _topic, payload in stream.messages]
    last = len(stamps) - 1

    def at(since_start: float) -> float:
        return stamps[max(0, min(last, int(since_start * rate)))]

    return at


def telemetry_kinds(stream: Stream) -> set[str]:
    return {line[: line.index(",")] for line in stream.lines} - {"device_status"}


def under_root(messages: list[tuple[str, bytes]], root: str, rate: float | None) -> list[Message]:
    """The stream under `root`, timed for `publish`: one message every 1/rate s, or all at
    t=0 for flat out. Never retained (see the module's docstring)."""
    step = 0.0 if rate is None else 1.0 / rate
    cut = len(ROOT)
    return [
        Message(i * step, root + topic[cut:], payload, "", 1, False)
        for i, (topic, payload) in enumerate(messages)
    ]


async def publish_stream(
    messages: list[Message], mqtt_url: str, password: str, client_id: str, rate: float | None
) -> PublishStats:
    """QoS 1 through the simulator's publisher, as the sentinel-sim gateway user."""
    return await publish(
        messages,
        mqtt_url=mqtt_url,
        username="sentinel-sim",
        password=password,
        client_id=client_id,
        speed=math.inf if rate is None else 1.0,
    )
