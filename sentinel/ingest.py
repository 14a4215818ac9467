"""The MQTT side: subscribe with a persistent session, reconnect with jittered backoff.

Two readers with one contract, chosen by `[mqtt] client`: `NativeReader` ("native") parses
each chunk of the socket's bytes whole (`sentinel.mqttwire`) and hands all its messages to the
inbox in one call; `MqttReader` ("paho") goes through aiomqtt/paho, one callback per message
(`queue_type` hook), never through an async iterator. Acknowledgements are manual: the agent
acks a QoS 1 message once its data is durable (`ack`), so a crash at any point leaves the
broker holding what was not yet stored, to resend to our persistent session. Backpressure
works by pausing the socket reads: unread messages stay with the broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
import structlog

from sentinel.backoff import Backoff
from sentinel.config import MqttConfig
from sentinel.errors import ConfigError
from sentinel.inbox import Ack, Inbox
from sentinel.metrics import Metrics
from sentinel.mqttwire import (
    CONNACK_REASONS,
    DISCONNECT,
    PINGREQ,
    SUBACK_FAILURE,
    ClientFramer,
    Received,
    encode_connect,
    encode_pubacks,
    encode_publish,
    encode_subscribe,
)
from sentinel.traffic.mqtt import MalformedError, PacketType

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


# --- the native reader -------------------------------------------------------------------

# Publishes (alerts, best effort) are refused once this much is waiting to be sent.
MAX_WRITE_BUFFER = 1 << 20
# A frame's topic, packet id and fixed header, on top of the largest payload accepted.
FRAME_OVERHEAD = 2 + 0xFFFF + 2 + 5
_SUBSCRIBE_ID = 1  # our packet ids: 1 for the SUBSCRIBE, then 2..65535 for publishes


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to the broker: each chunk is framed whole and handed on."""

    def __init__(self, reader: NativeReader, framer: ClientFramer) -> None:
        self.reader = reader
        self.framer = framer
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[str] = loop.create_future()  # why it closed
        self.connack: asyncio.Future[bytes] = loop.create_future()
        self.suback: asyncio.Future[bytes] = loop.create_future()
        self.last_read = self.last_write = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.last_write = time.monotonic()

    def data_received(self, data: bytes) -> None:
        self.last_read = time.monotonic()
        try:
            got = self.framer.feed(data)
        except MalformedError as exc:
            log.error("mqtt_bad_frame", reason=exc.reason, detail=exc.detail)
            self.close(f"bad frame from the broker ({exc.reason})")
            return
        for ptype, body in got.controls:
            if ptype is PacketType.CONNACK and not self.connack.done():
                self.connack.set_result(body)
            elif ptype is PacketType.SUBACK and not self.suback.done():
                self.suback.set_result(body)
            # PINGRESP, and the PUBACKs of our best-effort publishes: reading them is enough.
        self.reader.deliver(self, got)

    def close(self, why: str) -> None:
        if not self.closed.done():
            self.closed.set_result(why)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(str(exc) if exc else "closed by the broker")


class SessionError(Exception):
    """The connection could not be set up or was lost; the reader reconnects after a delay."""


class NativeReader:
    """The MQTT side without paho: an asyncio Protocol parses every frame of a chunk in one
    loop (`sentinel.mqttwire`) and hands the chunk's messages to the inbox in one call.

    Same contract as `MqttReader`: persistent session, manual acks (all of one `ack` call in
    one write), acks of an older connection skipped, backpressure by pausing the transport's
    reads, best-effort `publish` on the same connection. QoS 2 is refused (ConfigError).
    """

    def __init__(
        self,
        cfg: MqttConfig,
        filters: Sequence[str],
        inbox: Inbox,
        metrics: Metrics,
        max_payload: int = 1 << 20,
    ) -> None:
        if cfg.qos == 2:
            raise ConfigError(
                "mqtt", ['mqtt.qos = 2 needs mqtt.client = "paho": the native reader does 0 and 1']
            )
        self._cfg = cfg
        self._filters = list(filters)
        self._inbox = inbox
        self._metrics = metrics
        self._max_packet = max_payload + FRAME_OVERHEAD
        self._conn: _Connection | None = None
        self._connection = 0  # numbers connections: an ack is valid only on its own
        self._next_id = _SUBSCRIBE_ID
        self._paused = False
        self._stopping = False
        self.connected = asyncio.Event()
        self.last_error = ""  # why the last connection ended, as logged
        inbox.pause, inbox.resume = self.pause, self.resume

    # --- called by the connection and the agent -------------------------------------------

    def deliver(self, conn: _Connection, got: Received) -> None:
        if got.messages:
            self._inbox.extend(got.messages, got.acks)
        if got.skipped:
            # Never stored, so nothing to wait for: count them as the decoder counts its
            # rejections, and ack them now so that the broker does not send them again.
            self._metrics.messages_received.labels("mqtt").inc(len(got.skipped))
            for reason, _ in got.skipped:
                self._metrics.rejects.labels(reason).inc()
            ids = [pid for _, pid in got.skipped if pid is not None]
            if ids:
                conn.write(encode_pubacks(ids))

    def ack(self, acks: list[Ack | None]) -> int:
        """Acknowledge messages whose data is durable, in one write; returns how many.

        Acks for an older connection are skipped: the broker resends those messages on the
        new one, and storing them twice writes the same points again, which changes nothing.
        """
        conn, current = self._conn, self._connection
        if conn is None:
            return 0
        ids = [a[1] for a in acks if a is not None and a[0] == current]
        if ids:
            conn.write(encode_pubacks(ids))
        return len(ids)

    def pause(self) -> None:
        """Stop reading the socket: nothing more is received, so nothing more is acknowledged."""
        if not self._paused:
            self._paused = True
            if self._conn is not None and self._conn.transport is not None:
                self._conn.transport.pause_reading()

    def resume(self) -> None:
        if not self._paused or self._stopping:
            return
        self._paused = False
        conn = self._conn
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            conn.last_read = time.monotonic()  # the broker was not silent: we did not listen
            conn.transport.resume_reading()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> bool:
        """Queue a message on the agent's own connection, without waiting for the broker:
        it goes out even while reads are paused. False when not connected or backed up."""
        conn = self._conn
        if conn is None or conn.transport is None or not self.connected.is_set():
            return False
        if conn.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            return False
        packet_id = None
        if qos:
            self._next_id = self._next_id + 1 if self._next_id < 0xFFFF else _SUBSCRIBE_ID + 1
            packet_id = self._next_id
        conn.write(encode_publish(topic, payload, min(qos, 1), packet_id))
        return True

    def stop(self) -> None:
        """For shutdown: pause for good. The connection stays open for the last acks until
        the task running `run` is cancelled."""
        self.pause()
        self._stopping = True

    # --- the connection's life --------------------------------------------------------------

    async def run(self) -> None:
        backoff = Backoff(self._cfg.reconnect_min_s, self._cfg.reconnect_max_s)
        while not self._stopping:
            try:
                await self._session(backoff)
            except (OSError, SessionError, TimeoutError) as exc:
                error = str(exc) or type(exc).__name__
            finally:
                self.connected.clear()
                self._metrics.mqtt_connected.set(0)
            if self._stopping:
                return
            self._metrics.mqtt_reconnects.inc()
            delay = backoff.next_delay()
            self.last_error = error
            log.warning("mqtt_disconnected", error=error, retry_in_s=round(delay, 2))
            await asyncio.sleep(delay)

    async def _session(self, backoff: Backoff) -> None:
        cfg = self._cfg
        loop = asyncio.get_running_loop()
        self._connection += 1
        framer = ClientFramer(self._connection, self._max_packet)
        conn = _Connection(self, framer)
        tls = cfg.tls_context()
        try:
            async with asyncio.timeout(cfg.keepalive_s):
                await loop.create_connection(
                    lambda: conn,
                    cfg.host,
                    cfg.port,
                    ssl=tls,
                    server_hostname=cfg.host if tls else None,
                )
                conn.write(
                    encode_connect(
                        cfg.client_id,
                        username=cfg.username,
                        password=cfg.secret(),
                        keepalive_s=cfg.keepalive_s,
                        clean_session=cfg.clean_session,
                    )
                )
                # From here acks may go out: a resumed session's messages can come before
                # the SUBACK.
                self._conn = conn
                self._refused(await self._first(conn, conn.connack, "CONNACK"))
            backoff.reset()
            # The SUBACK is not awaited here: a resumed session's backlog comes first, and may
            # fill the inbox and pause the reads before it arrives.
            conn.suback.add_done_callback(lambda reply: self._subscribed(conn, reply.result()))
            conn.write(encode_subscribe(_SUBSCRIBE_ID, [(f, cfg.qos) for f in self._filters]))
            if self._paused:
                assert conn.transport is not None
                conn.transport.pause_reading()
            raise SessionError(await self._keep_alive(conn))
        finally:
            self._conn = None
            if conn.transport is not None and not conn.transport.is_closing():
                conn.write(DISCONNECT)
                conn.transport.close()

    @staticmethod
    async def _first(conn: _Connection, reply: asyncio.Future[bytes], name: str) -> bytes:
        """The broker's reply, or SessionError if the connection closes first."""
        waiting: list[asyncio.Future[Any]] = [reply, conn.closed]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not reply.done():
            raise SessionError(f"connection closed before the {name}: {conn.closed.result()}")
        return reply.result()

    @staticmethod
    def _refused(connack: bytes) -> None:
        code = connack[1] if len(connack) == 2 else -1
        if code:
            reason = CONNACK_REASONS.get(code, f"malformed CONNACK ({len(connack)} bytes)")
            log.error("mqtt_connect_refused", code=code, reason=reason)
            raise SessionError(f"the broker refused the connection: {reason}")

    def _subscribed(self, conn: _Connection, suback: bytes) -> None:
        """The SUBACK: from here on the agent is connected (publishes go out)."""
        if conn is not self._conn:
            return
        refused = [
            f for f, code in zip(self._filters, suback[2:], strict=False) if code == SUBACK_FAILURE
        ]
        if refused or len(suback) != 2 + len(self._filters):
            log.error("mqtt_subscribe_refused", filters=refused or self._filters)
        self._metrics.mqtt_connected.set(1)
        self.connected.set()
        cfg = self._cfg
        log.info("mqtt_subscribed", broker=f"{cfg.host}:{cfg.port}", filters=self._filters)

    async def _keep_alive(self, conn: _Connection) -> str:
        """PINGREQ when the line has been quiet a keepalive; close when the broker has been
        silent for 1.5 of them (not while we do not read). Returns why the connection ended."""
        keepalive = float(self._cfg.keepalive_s)
        tick = keepalive / 4
        while True:
            try:
                async with asyncio.timeout(tick):
                    return await asyncio.shield(conn.closed)
            except TimeoutError:
                pass
            now = time.monotonic()
            if not self._paused and now - conn.last_read > 1.5 * keepalive:
                conn.close(f"the broker was silent for {now - conn.last_read:.0f} s")
            elif now - conn.last_write >= keepalive or now - conn.last_read >= keepalive:
                conn.write(PINGREQ)


def build_reader(
    cfg: MqttConfig, filters: Sequence[str], inbox: Inbox, metrics: Metrics, max_payload: int
) -> MqttReader | NativeReader:
    if cfg.client == "native":
        return NativeReader(cfg, filters, inbox, metrics, max_payload)
    return MqttReader(cfg, filters, inbox, metrics)
