"""The MQTT side: subscribe with a persistent session, reconnect with jittered backoff.

The reader only moves (topic, payload) into the inbox: all decoding happens in batches.
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


class MqttReader:
    def __init__(
        self, cfg: MqttConfig, filters: Sequence[str], inbox: Inbox, metrics: Metrics
    ) -> None:
        self._cfg = cfg
        self._filters = list(filters)
        self._inbox = inbox
        self._metrics = metrics
        self.connected = asyncio.Event()

    def _client(self) -> aiomqtt.Client:
        cfg = self._cfg
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.secret(),
            identifier=cfg.client_id,
            clean_session=cfg.clean_session,
            keepalive=cfg.keepalive_s,
            tls_context=ssl.create_default_context() if cfg.tls else None,
        )

    async def run(self) -> None:
        backoff = Backoff(self._cfg.reconnect_min_s, self._cfg.reconnect_max_s)
        while True:
            try:
                async with self._client() as client:
                    await client.subscribe([(f, int(self._cfg.qos)) for f in self._filters])
                    self._metrics.mqtt_connected.set(1)
                    self.connected.set()
                    backoff.reset()
                    log.info(
                        "mqtt_subscribed",
                        broker=f"{self._cfg.host}:{self._cfg.port}",
                        filters=self._filters,
                    )
                    async for message in client.messages:
                        payload = message.payload
                        if not isinstance(payload, bytes):
                            payload = str(payload).encode()
                        await self._inbox.put(message.topic.value, payload)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                self._metrics.mqtt_connected.set(0)
                self._metrics.mqtt_reconnects.inc()
                delay = backoff.next_delay()
                log.warning("mqtt_disconnected", error=str(exc), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
