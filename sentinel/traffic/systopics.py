"""The broker's `$SYS/broker/...` topics as Prometheus gauges.

Only the topics listed here become metrics, each with labels from a fixed set: nothing a
client can influence reaches a label. Mosquitto's `load/.../1min` values are per minute
(moving averages over 1, 5 and 15 minutes); they are exposed per second.
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Gauge

_WINDOWS = ("1min", "5min", "15min")
_CLIENT_STATES = ("connected", "disconnected", "active", "inactive", "total", "maximum", "expired")


class BrokerGauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.clients = Gauge(
            "sentinel_broker_clients",
            "Broker clients by state ($SYS/broker/clients/<state>)",
            ["state"],
            registry=r,
        )
        self.messages_rate = Gauge(
            "sentinel_broker_messages_per_second",
            "MQTT packets of any type received or sent by the broker, moving average "
            "($SYS/broker/load/messages/...)",
            ["direction", "window"],
            registry=r,
        )
        self.publish_rate = Gauge(
            "sentinel_broker_publish_per_second",
            "PUBLISH packets received, sent or dropped by the broker, moving average "
            "($SYS/broker/load/publish/...)",
            ["direction", "window"],
            registry=r,
        )
        self.bytes_rate = Gauge(
            "sentinel_broker_bytes_per_second",
            "Bytes received or sent by the broker, moving average ($SYS/broker/load/bytes/...)",
            ["direction", "window"],
            registry=r,
        )
        self.connections_rate = Gauge(
            "sentinel_broker_connections_per_second",
            "Connections opened to the broker, moving average",
            ["window"],
            registry=r,
        )
        self.publish_dropped = Gauge(
            "sentinel_broker_publish_dropped_messages",
            "Messages the broker dropped since it started (queues full, inflight limits); "
            "$SYS/broker/publish/messages/dropped",
            registry=r,
        )
        self.messages = Gauge(
            "sentinel_broker_messages",
            "MQTT packets received or sent since the broker started ($SYS/broker/messages/...)",
            ["direction"],
            registry=r,
        )
        self.bytes = Gauge(
            "sentinel_broker_bytes",
            "Bytes received or sent since the broker started ($SYS/broker/bytes/...)",
            ["direction"],
            registry=r,
        )
        self.subscriptions = Gauge(
            "sentinel_broker_subscriptions", "Subscriptions held by the broker", registry=r
        )
        self.retained = Gauge(
            "sentinel_broker_retained_messages", "Retained messages held by the broker", registry=r
        )
        self.stored = Gauge(
            "sentinel_broker_stored_messages",
            "Messages in the broker's store (retained and queued)",
            registry=r,
        )
        self.heap = Gauge("sentinel_broker_heap_bytes", "Broker heap in use", registry=r)
        self.uptime = Gauge("sentinel_broker_uptime_seconds", "Broker uptime", registry=r)
        self.last_update = Gauge(
            "sentinel_broker_sys_last_update_timestamp_seconds",
            "When the agent last received a $SYS value (Unix time)",
            registry=r,
        )
        self.updates = 0
        self.ignored = 0

    def update(self, topic: str, payload: bytes, now: float) -> bool:
        """Set the gauge of one `$SYS` message; False for a topic or value not used."""
        value = _number(payload)
        gauge = None if value is None else self._gauge(topic, value)
        if gauge is None:
            self.ignored += 1
            return False
        metric, number = gauge
        metric.set(number)
        self.last_update.set(now)
        self.updates += 1
        return True

    def _gauge(self, topic: str, value: float) -> tuple[Gauge, float] | None:
        if not topic.startswith("$SYS/broker/"):
            return None
        parts = topic[12:].split("/")
        head = parts[0]
        if head == "clients" and len(parts) == 2 and parts[1] in _CLIENT_STATES:
            return self.clients.labels(parts[1]), value
        if head == "load" and len(parts) >= 3 and parts[-1] in _WINDOWS:
            window, what = parts[-1], parts[1]
            per_second = value / 60.0
            if len(parts) == 3 and what == "connections":
                return self.connections_rate.labels(window), per_second
            if len(parts) == 4:
                direction = parts[2]
                if what == "messages" and direction in ("received", "sent"):
                    return self.messages_rate.labels(direction, window), per_second
                if what == "bytes" and direction in ("received", "sent"):
                    return self.bytes_rate.labels(direction, window), per_second
                if what == "publish" and direction in ("received", "sent", "dropped"):
                    return self.publish_rate.labels(direction, window), per_second
            return None
        rest = "/".join(parts)
        if rest in ("messages/received", "messages/sent"):
            return self.messages.labels(parts[1]), value
        if rest in ("bytes/received", "bytes/sent"):
            return self.bytes.labels(parts[1]), value
        simple = {
            "publish/messages/dropped": self.publish_dropped,
            "subscriptions/count": self.subscriptions,
            "retained messages/count": self.retained,
            "store/messages/count": self.stored,
            "heap/current": self.heap,
            "uptime": self.uptime,
        }.get(rest)
        return None if simple is None else (simple, value)


def _number(payload: bytes) -> float | None:
    """`12`, `4409534.83`, `1234 seconds`: the leading number, or None."""
    try:
        first = payload[:64].split(None, 1)[0]
        value = float(first)
    except (IndexError, ValueError):
        return None
    return value if math.isfinite(value) else None
