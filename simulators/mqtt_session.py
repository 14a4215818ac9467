"""One MQTT connection for the simulator: paho-mqtt's threaded client, acks counted, bounded.

paho (callback API v2, network loop in its own thread) publishes about twice as fast per message
as aiomqtt, and it reconnects by itself: QoS 1 messages published while the link is down stay
queued in paho and go out (again) after the reconnect.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulators.messages import Message

log = logging.getLogger(__name__)

_SCHEMES = {"mqtt": (False, 1883), "tcp": (False, 1883), "mqtts": (True, 8883), "ssl": (True, 8883)}
# paho numbers in-flight messages with 16-bit ids: more pending than that would collide.
_MAX_PENDING = 60_000
_POLL_S = 0.005


class PublishError(Exception):
    """The simulator could not publish to the broker at all (unreachable, login refused)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        """`mqtt://host[:port]` (1883) or `mqtts://host[:port]` (TLS, system CAs, 8883)."""
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ValueError(f"{url!r}: scheme must be one of {sorted(_SCHEMES)}")
        if parts.username is not None or parts.password is not None:
            # Credentials in a URL end up in shell history, process lists and logs.
            raise ValueError("pass the username and password separately, not in the URL")
        if not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise ValueError(f"{url!r}: expected scheme://host[:port]")
        tls, default_port = _SCHEMES[parts.scheme]
        return cls(parts.hostname, parts.port or default_port, tls)

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


class MqttSession:
    """Publishes from one thread while paho's loop thread counts the broker's acks.

    At most `max_pending` messages await their ack: `publish` blocks beyond that (backpressure
    instead of an unbounded queue when the broker is slow or away).
    """

    def __init__(
        self,
        url: BrokerUrl,
        *,
        username: str | None,
        password: str | None,
        client_id: str,
        max_pending: int = 10_000,
    ) -> None:
        if not 0 < max_pending <= _MAX_PENDING:
            raise ValueError(f"max_pending must be in 1..{_MAX_PENDING}, got {max_pending}")
        self.url = url
        self.max_pending = max_pending
        self.published = 0
        self.acked = 0
        self.errors = 0
        self.disconnects = 0
        self._answered = threading.Event()
        self._connected = threading.Event()
        self._refused: str | None = None
        self._closing = False

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        if username is not None:
            client.username_pw_set(username, password)
        if url.tls:
            client.tls_set_context(ssl.create_default_context())
        # Unlimited in paho: its queue is scanned per ack (quadratic); `max_pending` bounds instead.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client

    def connect(self, timeout_s: float) -> None:
        """Connect and start paho's loop; raise PublishError when the broker does not accept us."""
        try:
            self._client.connect_async(self.url.host, self.url.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise PublishError(str(self.url), str(exc)) from exc
        self._client.loop_start()
        self._answered.wait(timeout_s)
        if not self._connected.is_set():
            self.close()
            raise PublishError(str(self.url), self._refused or f"no CONNACK within {timeout_s} s")

    def publish(self, message: Message, give_up: threading.Event) -> None:
        """Queue one message; wait while too many await their ack (until `give_up` is set)."""
        # Polling, not a condition variable: taking a lock per message and per ack costs
        # a third of the throughput, and waiting here is the rare case.
        while self.published - self.acked >= self.max_pending:
            if give_up.wait(_POLL_S):
                break
        info = self._client.publish(message.topic, message.payload, message.qos, message.retain)
        # Not connected: paho keeps QoS >= 1 messages and sends them after the reconnect.
        queued = info.rc == mqtt.MQTT_ERR_NO_CONN and message.qos > 0
        if info.rc == mqtt.MQTT_ERR_SUCCESS or queued:
            self.published += 1
        else:
            self.errors += 1

    def drain(self, timeout_s: float) -> bool:
        """Wait until every published message is acked; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.acked < self.published:
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)
        return True

    def close(self) -> None:
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()

    # paho callbacks, on paho's loop thread; only this thread writes `acked`.

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._refused = f"connection refused: {reason}"
            log.warning("mqtt connection to %s refused: %s", self.url, reason)
        else:
            self._connected.set()
            log.info("mqtt connected to %s", self.url)
        self._answered.set()

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        self._connected.clear()
        if not self._closing:
            self.disconnects += 1
            log.warning("mqtt connection to %s lost (%s); paho reconnects", self.url, reason)

    def _on_publish(self, _c: Any, _u: Any, _mid: int, _reason: Any, _p: Any) -> None:
        self.acked += 1
