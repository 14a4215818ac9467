"""`sentinel replay`: republish a recording to a broker, paced or as fast as possible.

One connection publishes every message with its recorded QoS and retain flag, in file order, so
each device's messages keep their order; the pacing follows the recorded timestamps divided by
`speed`. Broker events in the file (refused logins, subscriptions) are not messages: they are
skipped and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from simulators.messages import Message
from simulators.publisher import PublishStats, publish
from simulators.recordfile import BrokerEvent, open_recording


@dataclass
class ReplayStats:
    publish: PublishStats
    skipped_events: int


def _device_of(topic: str) -> str:
    levels = topic.split("/")
    return levels[-2] if len(levels) >= 2 else ""


async def replay(
    path: Path,
    *,
    mqtt_url: str,
    username: str | None,
    password: str | None,
    client_id: str = "sentinel-replay",
    speed: float = 1.0,
    on_progress: Callable[[PublishStats], None] | None = None,
) -> ReplayStats:
    rec = open_recording(path)
    skipped = 0

    def messages() -> Iterator[Message]:
        nonlocal skipped
        for e in rec.entries():
            if isinstance(e, BrokerEvent):
                skipped += 1
                continue
            yield Message(e.ts, e.topic, e.payload, _device_of(e.topic), e.qos, e.retain)

    stats = await publish(
        messages(),
        mqtt_url=mqtt_url,
        username=username,
        password=password,
        client_id=client_id,
        speed=speed,
        on_progress=on_progress,
    )
    return ReplayStats(stats, skipped)
