"""Detection latency: from the first anomalous message published to the alert in
Alertmanager's API, for anomalies injected beside the stream (so under its load).

Each anomaly is one report of a new device past a threshold rule that raises on one point
(`raise_after = 1`), so the time measured is the pipeline's, not the rule's patience. The
watcher polls `/api/v2/alerts` every POLL_S (the resolution). Once seen, each device sends
`clear_after` normal reports, so that its alert resolves instead of lingering in the shared
Alertmanager. Each device sits in its own tenant and zone: the agent's storm protection
notifies only the first `alerting.max_notified_per_incident` alerts of one (tenant, zone, group)
one by one (the rest as one roll-up), folds the incidents of `alerting.fleet_min_zones` zones
of one tenant into one fleet incident, and here every alert is to be seen on its own.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import orjson

from benchmarks.ingest.stack import BenchError, Stack
from sentinel.config import Config, DetectorConfig
from simulators.messages import Message
from simulators.mqtt_session import BrokerUrl, MqttSession

POLL_S = 0.05
WAIT_AFTER_S = 15.0


@dataclass(frozen=True)
class Rule:
    detector: str
    kind: str
    metric: str
    anomalous: float
    normal: float
    clear_after: int


def pick_rule(config: Config) -> Rule:
    """A threshold rule that raises on a single point past an upper line, the one with the
    fewest points to clear (fewest extra messages)."""
    eligible: list[tuple[int, int, DetectorConfig]] = []
    for i, det in enumerate(config.detectors):
        p = det.params
        one_point = p.get("raise_after", 1) == 1 and p.get("op") in (">", ">=")
        if det.enabled and det.type == "threshold" and one_point:
            eligible.append((int(p.get("clear_after", 1)), i, det))
    if not eligible:
        raise BenchError("no threshold rule with raise_after = 1 and op > in the config")
    clear_after, _, det = min(eligible, key=lambda e: e[:2])
    value = float(det.params["value"])
    step = max(1.0, abs(value))
    normal = value / 2 if value > 0 else value - step
    return Rule(det.name, det.kinds[0], det.params["metric"], value + step, normal, clear_after)


@dataclass
class LatencyProbe:
    stack: Stack
    rule: Rule
    count: int
    delay_s: float
    spacing_s: float
    # Seconds since the stream started -> the device time its messages carry then (None: the
    # wall clock). A replayed stream's clock runs apart from the wall's: a probe on the wall
    # clock would be hours or minutes ahead of the fleet, and every device would look silent.
    stream_clock: Callable[[float], float] | None = None
    latencies: list[float] = field(default_factory=list)
    missing: int = 0

    def _device_time(self, since_start: float) -> float:
        return time.time() if self.stream_clock is None else self.stream_clock(since_start)

    def _message(self, root: str, device: str, value: float, seq: int, t0: float) -> Message:
        """Report `seq` of `device`, timed 10 ms after the previous one: each is a point."""
        # One tenant and zone per device (see the docstring).
        place = f"bench-{device.rsplit('-', 1)[1]}"
        topic = f"{root}/{place}/{place}/{self.rule.kind}/{device}/telemetry"
        ts = round(t0 + seq * 0.01, 3)
        body = {"device_id": device, "ts": ts, "seq": seq, "metrics": {self.rule.metric: value}}
        return Message(0.0, topic, orjson.dumps(body), device)

    async def _watch(self, tag: str, seen: dict[str, float]) -> None:
        params = [
            ("filter", f'detector="{self.rule.detector}"'),
            ("filter", f'device_id=~"benchlat-{tag}-.*"'),
        ]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while True:
                async with http.get(f"{self.stack.am_url}/api/v2/alerts", params=params) as r:
                    alerts = await r.json()
                now = time.time()
                for a in alerts:
                    if a["status"]["state"] == "active":
                        seen.setdefault(a["labels"]["device_id"], now)
                await asyncio.sleep(POLL_S)

    async def __call__(self, root: str, started: asyncio.Event) -> int:
        session = MqttSession(
            BrokerUrl.parse(self.stack.mqtt_url),
            username="sentinel-sim",
            password=self.stack.secret("mqtt-sim"),
            client_id=f"bench-anomalies-{uuid.uuid4().hex[:8]}",
        )
        await asyncio.to_thread(session.connect, 10.0)
        tag = uuid.uuid4().hex[:8]
        devices = [f"benchlat-{tag}-{i:02d}" for i in range(self.count)]
        sent: dict[str, float] = {}
        stamped: dict[str, float] = {}  # the anomaly's payload ts
        seen: dict[str, float] = {}
        watcher = asyncio.create_task(self._watch(tag, seen))
        never = threading.Event()
        try:
            await started.wait()
            began = time.monotonic()
            await asyncio.sleep(self.delay_s)
            for device in devices:
                sent[device] = time.time()
                stamped[device] = self._device_time(time.monotonic() - began)
                anomaly = self._message(root, device, self.rule.anomalous, 0, stamped[device])
                session.publish(anomaly, never)
                await asyncio.sleep(self.spacing_s)
            # The watcher fills `seen`; give the last anomalies time to show up.
            deadline = time.monotonic() + WAIT_AFTER_S
            while len(seen) < len(devices) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(POLL_S)
        finally:
            watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        if not watcher.cancelled() and watcher.exception() is not None:
            raise BenchError(f"polling Alertmanager failed: {watcher.exception()!r}")
        for device in devices:
            for seq in range(1, self.rule.clear_after + 1):
                clear = self._message(root, device, self.rule.normal, seq, stamped[device])
                session.publish(clear, never)
        await asyncio.to_thread(session.drain, 30.0)
        await asyncio.to_thread(session.close)
        self.latencies = [seen[d] - sent[d] for d in devices if d in seen]
        self.missing = len(devices) - len(self.latencies)
        return session.acked
