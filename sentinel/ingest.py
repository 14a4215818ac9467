"""The MQTT side: subscribe with a persistent session, reconnect with jittered backoff.

Messages go from the client's callback straight into the inbox (aiomqtt's `queue_type` hook),
never through an async iterator: paho acknowledges a QoS 1 message as it reads it, so the
message must be ours at that instant, with no task switch where a shutdown could lose it.
Backpressure and shutdown both work by pausing the socket reads: unread messages stay with
the broker, which resends them to our persistent session.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence

import aiomqtt
import structlog

from sentinel.backoff import Backoff
from sentinel.config import MqttConfig
from sentinel.inbox import Inbox
from sentinel.metrics import Metrics

log = structlog.get_logger(__name__)


def _payload(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    return payload if isinstance(payload, bytes) else str(payload).encode()


class MqttReader:
    def __init__(
        self, cfg: MqttConfig, filters: Sequence[str], inbox: Inbox, metrics: Metrics
    ) -> None:
        self._cfg = cfg
        self._filters = list(filters)
        self._inbox = inbox
        self._metrics = metrics
        self._client: aiomqtt.Client | None = None
        self._paused_fd: int | None = None
        self._stopping = False
        self.connected = asyncio.Event()
        inbox.pause, inbox.resume = self.pause, self.resume

    def _new_client(self) -> aiomqtt.Client:
        cfg, inbox = self._cfg, self._inbox

        class ToInbox(asyncio.Queue[aiomqtt.Message]):
            def put_nowait(self, item: aiomqtt.Message) -> None:
                inbox.add(item.topic.value, _payload(item))

        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.secret(),
            identifier=cfg.client_id,
            clean_session=cfg.clean_session,
            keepalive=cfg.keepalive_s,
            tls_context=ssl.create_default_context() if cfg.tls else None,
            queue_type=ToInbox,
        )

    def _socket_fd(self) -> int | None:
        # aiomqtt has no public way to stop reading; its paho client and socket are reached
        # here, and only here (aiomqtt is pinned below 3 in pyproject.toml).
        paho = self._client._client if self._client else None
        sock = paho.socket() if paho is not None else None
        return sock.fileno() if sock is not None and sock.fileno() >= 0 else None

    def pause(self) -> None:
        """Stop reading the socket: nothing more is received, so nothing more is acknowledged."""
        fd = self._socket_fd()
        if fd is not None and self._paused_fd is None:
            asyncio.get_running_loop().remove_reader(fd)
            self._paused_fd = fd

    def resume(self) -> None:
        if self._paused_fd is None or self._stopping or self._client is None:
            return
        fd, self._paused_fd = self._paused_fd, None
        if fd == self._socket_fd():
            client = self._client
            # Re-register aiomqtt's own read callback for the same socket.
            client._on_socket_open(client._client, None, client._client.socket())

    def stop(self) -> None:
        """For shutdown: pause for good; whatever was acknowledged is already in the inbox."""
        self._stopping = True
        self.pause()

    async def run(self) -> None:
        backoff = Backoff(self._cfg.reconnect_min_s, self._cfg.reconnect_max_s)
        while not self._stopping:
            try:
                async with self._new_client() as client:
                    self._client = client
                    await client.subscribe([(f, int(self._cfg.qos)) for f in self._filters])
                    self._metrics.mqtt_connected.set(1)
                    self.connected.set()
                    backoff.reset()
                    log.info(
                        "mqtt_subscribed",
                        broker=f"{self._cfg.host}:{self._cfg.port}",
                        filters=self._filters,
                    )
                    # Messages bypass the iterator (see ToInbox); it only ever ends on a
                    # disconnection, by raising MqttError.
                    await anext(client.messages)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                self._metrics.mqtt_connected.set(0)
                self._metrics.mqtt_reconnects.inc()
                delay = backoff.next_delay()
                log.warning("mqtt_disconnected", error=str(exc), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
            finally:
                self._client, self._paused_fd = None, None
