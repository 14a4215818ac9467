"""The traffic analyzer's settings: who is trusted, thresholds, bounds. See docs/traffic.md."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

AlertKind = Literal[
    "brute_force_ip",
    "brute_force_user",
    "reconnect_storm",
    "client_id_multi_ip",
    "forbidden_subscription",
    "command_publish",
    "retained_abuse",
    "oversized_payload",
    "malformed_packets",
    "slowite",
    "publish_flood",
    "telnet_ssh_scan",
    "new_destination",
    "volume_anomaly",
]
ALERT_KINDS: tuple[AlertKind, ...] = get_args(AlertKind)
Severity = Literal["info", "warning", "critical"]

DEFAULT_SEVERITIES: dict[AlertKind, Severity] = {
    "brute_force_ip": "critical",
    "brute_force_user": "critical",
    "reconnect_storm": "warning",
    "client_id_multi_ip": "warning",
    "forbidden_subscription": "critical",
    "command_publish": "critical",
    "retained_abuse": "warning",
    "oversized_payload": "warning",
    "malformed_packets": "warning",
    "slowite": "critical",
    "publish_flood": "warning",
    "telnet_ssh_scan": "critical",
    "new_destination": "warning",
    "volume_anomaly": "warning",
}


class TrafficConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Windows: flow features per tumbling window; MQTT counters over a sliding one of this span.
    window_s: float = Field(default=60.0, gt=0)

    # Recognition and memory bounds.
    mqtt_ports: tuple[int, ...] = (1883,)  # plaintext broker ports: parsed even without CONNECT
    max_buffer_bytes: int = Field(default=65536, ge=1024)  # per TCP direction
    max_packet_bytes: int = Field(default=16 << 20, ge=1024)  # larger MQTT packets: oversized
    max_streams: int = Field(default=200_000, ge=16)
    max_hosts: int = Field(default=100_000, ge=16)

    # Who is who, by MQTT username.
    operators: tuple[str, ...] = ("sentinel-agent", "sentinel-operator")  # may do anything
    gateways: tuple[str, ...] = ("sentinel-sim",)  # speak for many devices (no flood check)
    topic_root: str = "fleet"
    device_level: int = Field(default=4, ge=1)  # index of {device_id} in the topic levels
    command_topic: str = "fleet/+/+/+/+/command"
    retain_topics: tuple[str, ...] = ("fleet/+/+/+/+/status",)  # where retain is legitimate

    # Thresholds (counts within window_s unless said otherwise).
    brute_force_failures: int = Field(default=10, ge=1)  # refused CONNACKs per IP / username
    reconnects: int = Field(default=20, ge=2)  # accepted connections per client id
    client_id_ips: int = Field(default=2, ge=2)  # distinct source IPs per client id
    max_payload_bytes: int = Field(default=4096, ge=0)  # PUBLISH payload; docs/wire-format.md
    slowite_keep_alive_s: int = Field(default=3600, ge=1)  # also counts keep-alive 0 (none)
    slowite_connections: int = Field(default=10, ge=1)  # such CONNECTs per source IP
    publish_flood: int = Field(default=600, ge=1)  # PUBLISHes per client
    scan_ports: tuple[int, ...] = (22, 23, 2323)
    scan_destinations: int = Field(default=10, ge=1)  # distinct IPs on scan ports per window
    learning_s: float = Field(default=600.0, ge=0)  # per host, from its first packet
    volume_factor: float = Field(default=10.0, gt=1)  # bytes out vs the host's median window
    volume_min_bytes: int = Field(default=1_000_000, ge=0)  # and at least this much above it
    baseline_windows: int = Field(default=5, ge=1)  # windows of history before judging

    severities: dict[AlertKind, Severity] = Field(default_factory=lambda: dict(DEFAULT_SEVERITIES))

    @field_validator("mqtt_ports", "scan_ports")
    @classmethod
    def _ports(cls, ports: tuple[int, ...]) -> tuple[int, ...]:
        bad = [p for p in ports if not 1 <= p <= 65535]
        if bad:
            raise ValueError(f"not TCP ports: {bad}")
        return ports

    @field_validator("severities")
    @classmethod
    def _complete(cls, given: dict[AlertKind, Severity]) -> dict[AlertKind, Severity]:
        return {**DEFAULT_SEVERITIES, **given}
