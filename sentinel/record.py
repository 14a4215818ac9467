"""`sentinel record`: an MQTT stream to a recording file, with receive timestamps, compressed.

paho's network thread writes each message as it arrives (the only writer); the caller waits
for a stop: a signal, a duration or a message count. The subscription is QoS 1, so what the
broker delivers keeps each publisher's order, and the file keeps arrival order. Retained
messages already on the broker arrive first, flagged retained.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from simulators.mqtt_session import BrokerUrl
from simulators.recordfile import RecordingWriter


class RecordError(Exception):
    """The recorder could not connect or subscribe."""


@dataclass(frozen=True)
class RecordStats:
    messages: int
    elapsed_s: float
    path: Path


class Recorder:
    """Subscribe to `topics` and write every message to `out` until `stop()`."""

    def __init__(
        self,
        mqtt_url: str,
        out: Path,
        topics: Sequence[str] = ("fleet/#",),
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str = "sentinel-recorder",
    ) -> None:
        self.url = BrokerUrl.parse(mqtt_url)
        self.topics = list(topics)
        self.out = out
        self.ready = threading.Event()
        self.failed: str | None = None
        self._started = 0.0
        self._writer = RecordingWriter(
            out, {"source": "mqtt", "broker": str(self.url), "topics": self.topics}
        )
        self._lock = threading.Lock()
        self._closed = False
        # MQTT 5 for "retain as published": a retained message published while we are
        # subscribed keeps its retain flag (MQTT 3.1.1 clears it), so replays republish it as such.
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username is not None:
            c.username_pw_set(username, password)
        if self.url.tls:
            c.tls_set_context(ssl.create_default_context())
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client = c

    @property
    def messages(self) -> int:
        return self._writer.messages

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe; raise RecordError when the broker refuses either."""
        self._started = time.monotonic()
        self._client.connect_async(self.url.host, self.url.port, keepalive=30)
        self._client.loop_start()
        if not self.ready.wait(timeout_s) or self.failed:
            self.stop()
            raise RecordError(self.failed or f"{self.url}: not subscribed within {timeout_s} s")

    def stop(self) -> RecordStats:
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            if not self._closed:
                self._closed = True
                self._writer.close()
        return RecordStats(self._writer.messages, time.monotonic() - self._started, self.out)

    def _on_connect(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.failed = f"{self.url}: connection refused: {reason}"
            self.ready.set()
            return
        options = SubscribeOptions(qos=1, retainAsPublished=True)
        client.subscribe([(t, options) for t in self.topics])

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
        refused = [t for t, code in zip(self.topics, codes, strict=False) if code.is_failure]
        if refused:
            self.failed = f"{self.url}: subscription refused for {', '.join(refused)}"
        self.ready.set()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._lock:
            if not self._closed:
                self._writer.write(time.time(), msg.topic, msg.payload, msg.qos, bool(msg.retain))
