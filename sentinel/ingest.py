"""The MQTT side: subscribe with a persistent session, reconnect with jittered backoff.

Messages go from the client's callback straight into the inbox (aiomqtt's `queue_type` hook),
never through an async iterator. Acknowledgements are manual: the agent acks a QoS 1 message
once its data is durable (`ack`), so a crash at any point leaves the broker holding what was
not yet stored, to resend to our persistent session. Backpressure works by pausing the socket
reads: unread messages stay with the broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiomqtt
import paho.mqtt.client as mqtt
import structlog

from sentinel.backoff import Backoff
from sentinel.config import MqttConfig
from sentinel.inbox import Ack, Inbox
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
        self._connection = 0  # numbers connections: an ack is valid only on its own
        self.connected = asyncio.Event()
        inbox.pause, inbox.resume = self.pause, self.resume

    def _new_client(self) -> aiomqtt.Client:
        cfg, inbox = self._cfg, self._inbox
        self._connection += 1
        connection = self._connection

        class ToInbox(asyncio.Queue[aiomqtt.Message]):
            def put_nowait(self, item: aiomqtt.Message) -> None:
                ack = (connection, item.mid) if item.qos > 0 else None
                inbox.add(item.topic.value, _payload(item), ack)

        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.secret(),
            identifier=cfg.client_id,
            clean_session=cfg.clean_session,
            keepalive=cfg.keepalive_s,
            tls_context=cfg.tls_context(),
            queue_type=ToInbox,
        )
        client._client.manual_ack_set(True)
        return client

    def _paho(self) -> mqtt.Client | None:
        # aiomqtt offers no manual acks and no way to stop reading: both need its paho client,
        # reached here and in the methods below only (aiomqtt is pinned below 3).
        return self._client._client if self._client else None

    def ack(self, acks: list[Ack | None]) -> int:
        """Acknowledge messages whose data is durable; returns how many were acked.

        Acks for an older connection are skipped: the broker resends those messages on the
        new one, and storing them twice writes the same points again, which changes nothing.
        """
        paho = self._paho()
        if paho is None:
            return 0
        current = self._connection
        sent = 0
        for ack in acks:
            if ack is not None and ack[0] == current:
                paho.ack(ack[1], 1)
                sent += 1
        return sent

    def _socket_fd(self) -> int | None:
        paho = self._paho()
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
        paho = self._paho()
        if fd == self._socket_fd() and paho is not None:
            # Re-register aiomqtt's own read callback for the same socket.
            self._client._on_socket_open(paho, None, paho.socket())

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> bool:
        """Queue a message on the agent's own connection, without waiting for the broker:
        it goes out even while reads are paused. False when not connected."""
        paho = self._paho()
        if paho is None or not self.connected.is_set():
            return False
        return paho.publish(topic, payload, qos=qos).rc == mqtt.MQTT_ERR_SUCCESS

    def stop(self) -> None:
        """For shutdown: pause for good. The connection stays open for the last acks until
        the task running `run` is cancelled."""
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
