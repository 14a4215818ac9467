"""Alert changes on an MQTT topic, for automation (a SOAR, a city's operations bus).

Each notice is one JSON message on `<[alerting] mqtt_topic>/<tenant>/<zone>/<severity>`
(levels from validated labels), QoS 1, queued on the agent's own connection without waiting:
best effort while the broker is away (counted as dropped). The durable records are InfluxDB's
`alerts` measurement and Alertmanager.
"""

from __future__ import annotations

from typing import Protocol

import orjson

from sentinel.alerting.alerts import Notice
from sentinel.metrics import Metrics


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int = 1) -> bool: ...


def notice_message(base: str, notice: Notice) -> tuple[str, bytes]:
    labels = notice.labels()
    topic = f"{base}/{labels['tenant']}/{labels['zone']}/{labels['severity']}"
    body = {
        "fingerprint": notice.fingerprint,
        "state": "firing" if notice.firing else "resolved",
        "labels": labels,
        "summary": notice.summary[:1024],
        "starts_at": notice.starts_at,
        "evidence": orjson.loads(notice.evidence_json()),
    }
    return topic, orjson.dumps(body)


class MqttAlertSink:
    def __init__(self, base_topic: str, publisher: Publisher, metrics: Metrics) -> None:
        self.base_topic = base_topic
        self.publisher = publisher
        self.metrics = metrics

    def notify(self, notices: list[Notice]) -> None:
        for notice in notices:
            topic, payload = notice_message(self.base_topic, notice)
            if self.publisher.publish(topic, payload, qos=1):
                self.metrics.notifications.labels("mqtt").inc()
            else:
                self.metrics.notifications_dropped.labels("mqtt_unavailable").inc()
