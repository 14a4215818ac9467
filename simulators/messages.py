"""MQTT messages as the simulated devices publish them (see docs/wire-format.md)."""

from __future__ import annotations

import re
from typing import NamedTuple

import orjson

from simulators.fleet import Device

DEFAULT_TOPIC_PREFIX = "fleet"
# One or more plain topic levels: no wildcard, no empty level.
_PREFIX_RE = re.compile(r"[^/+#\x00]+(/[^/+#\x00]+)*")


class Message(NamedTuple):
    """One publication. `ts` is the simulated time it is sent at (the payload has its own)."""

    ts: float
    topic: str
    payload: bytes
    device_id: str
    qos: int = 1
    retain: bool = False
    # Who publishes it when a real broker is used: "" the simulator's gateway connection;
    # WILL the broker itself (the device's last will, its connection having dropped);
    # "operator:<client_id>" a separate client with the operator's credentials.
    origin: str = ""


WILL = "will"
OPERATOR = "operator:"


def check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"invalid topic prefix {prefix!r}")
    return prefix


def topic(prefix: str, device: Device, leaf: str) -> str:
    return f"{prefix}/{device.tenant}/{device.zone}/{device.kind}/{device.device_id}/{leaf}"


def online(prefix: str, device: Device, ts: float) -> Message:
    """The retained status a device publishes when it (re)connects."""
    payload = orjson.dumps({"state": "online", "ts": round(ts, 3)})
    return Message(ts, topic(prefix, device, "status"), payload, device.device_id, 1, True)


def status(prefix: str, device: Device, state: str, ts: float) -> Message:
    """A retained status the device publishes itself (on connect: `online`)."""
    payload = orjson.dumps({"state": state, "ts": round(ts, 3)})
    return Message(ts, topic(prefix, device, "status"), payload, device.device_id, 1, True)


def last_will(prefix: str, device: Device, ts: float) -> Message:
    """The `offline` last will the broker publishes when the device's connection drops.

    Its payload is the bare string (a will is set at connect time: it carries no timestamp).
    """
    return Message(ts, topic(prefix, device, "status"), b"offline", device.device_id, 1, True, WILL)
