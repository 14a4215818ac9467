"""The agent's Prometheus metrics, on an explicit registry (tests build a fresh one).

Label values come only from bounded sets: reject reasons, configured kinds, configured
detector names and severities. Never a device id or a topic: an attacker controls those.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages_received = Counter(
            "sentinel_messages_received_total", "MQTT messages received", ["source"], registry=r
        )
        self.records_accepted = Counter(
            "sentinel_records_accepted_total",
            "Records that passed validation",
            ["kind"],
            registry=r,
        )
        self.rejects = Counter(
            "sentinel_rejects_total", "Messages rejected, by reason", ["reason"], registry=r
        )
        self.deadletter_size = Gauge(
            "sentinel_deadletter_entries", "Entries held in the dead-letter store", registry=r
        )
        self.tracked_devices = Gauge(
            "sentinel_tracked_devices", "Distinct device ids admitted", registry=r
        )
        self.queue_depth = Gauge(
            "sentinel_queue_depth", "Items waiting between stages", ["queue"], registry=r
        )
        self.batch_seconds = Histogram(
            "sentinel_batch_seconds",
            "Time to decode, store-enqueue and score one batch",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.influx_write_seconds = Histogram(
            "sentinel_influx_write_seconds",
            "InfluxDB /write request latency",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.influx_points_written = Counter(
            "sentinel_influx_points_written_total", "Points acknowledged by InfluxDB", registry=r
        )
        self.influx_write_errors = Counter(
            "sentinel_influx_write_errors_total", "Failed InfluxDB writes", ["kind"], registry=r
        )
        for kind in ("unavailable", "rejected"):  # present at 0: a rate of 0, not "no data"
            self.influx_write_errors.labels(kind)
        self.spool_bytes = Gauge(
            "sentinel_spool_bytes", "Bytes in the on-disk spool (InfluxDB away)", registry=r
        )
        self.spool_capacity_bytes = Gauge(
            "sentinel_spool_capacity_bytes", "Size cap of the on-disk spool", registry=r
        )
        self.spooled_points = Counter(
            "sentinel_spooled_points_total", "Points written to the on-disk spool", registry=r
        )
        self.alerts = Counter(
            "sentinel_alerts_total", "Alerts raised", ["detector", "severity"], registry=r
        )
        self.alerts_active = Gauge(
            "sentinel_alerts_active",
            "Alerts currently firing",
            ["detector", "severity"],
            registry=r,
        )
        self.alerts_suppressed = Counter(
            "sentinel_alerts_suppressed_total",
            "Alerts muted by a suppression, maintenance window or inhibition",
            ["detector"],
            registry=r,
        )
        self.observed = Counter(
            "sentinel_observed_total",
            "Alerts an observe-only detector would have raised",
            ["detector"],
            registry=r,
        )
        self.detector_score = Histogram(
            "sentinel_detector_score",
            "Scores of scoring detectors (worst per device and batch), 0..1",
            ["detector"],
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
            registry=r,
        )
        self.incidents = Counter(
            "sentinel_incidents_total", "Incidents opened", ["severity"], registry=r
        )
        self.incidents_open = Gauge("sentinel_incidents_open", "Incidents open", registry=r)
        self.feedback = Counter(
            "sentinel_feedback_total",
            "Analyst feedback on alerts and incidents",
            ["detector", "verdict"],
            registry=r,
        )
        self.notifications = Counter(
            "sentinel_notifications_total", "Notices sent, by sink", ["sink"], registry=r
        )
        self.notifications_dropped = Counter(
            "sentinel_notifications_dropped_total",
            "Alerts not notified on their own (rolled_up: counted in their incident's roll-up)",
            ["reason"],
            registry=r,
        )
        self.config_reloads = Counter(
            "sentinel_config_reloads_total", "Configuration reloads", ["result"], registry=r
        )
        self.alertmanager_errors = Counter(
            "sentinel_alertmanager_post_errors_total",
            "Failed posts to Alertmanager",
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "sentinel_mqtt_connected", "1 while subscribed to the broker", registry=r
        )
        self.mqtt_acked = Counter(
            "sentinel_mqtt_acked_total",
            "QoS 1 messages acknowledged to the broker, once their data was stored",
            registry=r,
        )
        self.mqtt_reconnects = Counter(
            "sentinel_mqtt_reconnects_total", "Broker connection losses", registry=r
        )
