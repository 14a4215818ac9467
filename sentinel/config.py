"""One typed configuration, loaded from a TOML file with `SENTINEL_` environment overrides.

Loaded and validated once at start; any wrong key or value fails with a message naming it.
Environment overrides use `__` between levels: `SENTINEL_MQTT__URL=mqtt://host:1883`.
Secrets come from `*_file` paths or the environment, never from the TOML file's text.
"""

from __future__ import annotations

import ssl
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from detectors import registry
from detectors.base import DetectorParams
from detectors.model import KINDS
from sentinel.alerting.suppressions import SuppressionError, check_matchers
from sentinel.errors import ConfigError
from sentinel.partition import check_slice
from sentinel.topics import TopicPattern
from sentinel.traffic.config import TrafficConfig
from sentinel.traffic.inventory import InventoryError, load_inventory


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _read_secret(value: SecretStr | None, path: Path | None, what: str) -> str | None:
    if value is not None:
        return value.get_secret_value()
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError("secrets", [f"{what}: cannot read {path}: {exc.strerror}"]) from None


class MqttConfig(_Section):
    url: str = "mqtt://127.0.0.1:18830"
    client_id: str = Field(default="sentinel-agent", min_length=1, max_length=64)
    username: str | None = "sentinel-agent"
    password: SecretStr | None = None
    password_file: Path | None = None
    # For mqtts:// with a private CA (the local stack makes one); default: the system's CAs.
    ca_file: Path | None = None
    telemetry_topic: str = "fleet/{tenant}/{zone}/{kind}/{device_id}/telemetry"
    status_topic: str = "fleet/{tenant}/{zone}/{kind}/{device_id}/status"
    # Commands sent to devices (decoded into CommandRecords, see docs/wire-format.md); "" = off.
    command_topic: str = "fleet/{tenant}/{zone}/{kind}/{device_id}/command"
    qos: Literal[0, 1, 2] = 1
    # The MQTT reader: "native" parses PUBLISH frames in bulk (QoS 0/1, sentinel.mqttwire);
    # "paho" is the aiomqtt/paho client, kept for comparison and for qos = 2.
    client: Literal["native", "paho"] = "native"
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    # A persistent session: the broker queues QoS 1 messages while the agent is away.
    clean_session: bool = False
    # Scale-out (sentinel.partition): this replica's share of the fleet, as tenants or
    # (tenant, zone) pairs, e.g. [{tenant = "lyon", zone = "part-dieu"}]; empty = everything.
    partition: tuple[dict[str, str], ...] = ()
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)

    @field_validator("partition")
    @classmethod
    def _partition(cls, v: tuple[dict[str, str], ...]) -> tuple[dict[str, str], ...]:
        return tuple(check_slice(spec) for spec in v)

    @model_validator(mode="after")
    def _native_qos(self) -> MqttConfig:
        if self.client == "native" and self.qos == 2:
            raise ValueError('qos = 2 needs client = "paho": the native reader does QoS 0 and 1')
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://host:port or mqtts://host:port")
        return v

    @field_validator("command_topic")
    @classmethod
    def _command_topic(cls, v: str) -> str:
        if v:
            pattern = TopicPattern.parse(v)  # a ValueError names what is wrong
            if not {"kind", "device_id"} <= pattern.placeholders:
                raise ValueError("must name the target with {kind} and {device_id}")
        return v

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    def secret(self) -> str | None:
        return _read_secret(self.password, self.password_file, "mqtt.password_file")

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("tls", [f"mqtt.ca_file: cannot use {self.ca_file}: {exc}"]) from None


class ValidationConfig(_Section):
    max_payload_bytes: int = Field(default=4096, ge=64, le=1_048_576)
    max_metrics: int = Field(default=64, ge=1, le=1024)
    max_future_s: float = Field(default=300.0, ge=0)
    max_past_s: float = Field(default=7 * 86400.0, ge=0)
    kinds: tuple[str, ...] = KINDS
    # Device ids are attacker-controlled: beyond this many, new ids are rejected and
    # counted, so InfluxDB series and detector state stay bounded.
    max_devices: int = Field(default=200_000, ge=1)


class InfluxConfig(_Section):
    url: str = "http://127.0.0.1:18086"
    database: str = Field(default="sentinel", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    username: str | None = "sentinel-agent"
    password: SecretStr | None = None
    password_file: Path | None = None
    batch_size: int = Field(default=5000, ge=1, le=100_000)
    # Also the acknowledgement latency: messages are acked to the broker once written.
    flush_interval_s: float = Field(default=0.5, gt=0, le=60)
    timeout_s: float = Field(default=10.0, gt=0)
    # Points held in memory while InfluxDB is slow or away; past this the pipeline waits
    # (backpressure to the broker, which queues for our persistent session).
    max_buffered_points: int = Field(default=200_000, ge=1)
    retry_max_s: float = Field(default=30.0, gt=0)
    # After this long without a successful write, points go to the on-disk spool (when set)
    # and their messages are acknowledged; the spool drains in order once InfluxDB is back.
    spool_dir: Path | None = None
    spool_max_bytes: int = Field(default=1 << 30, ge=1 << 20)
    spool_after_s: float = Field(default=5.0, ge=0)
    # ... and once the oldest point in memory has waited this long (InfluxDB up but slower
    # than the stream): acknowledgements, hence the broker's flow to us, follow the disk.
    spool_lag_s: float = Field(default=2.0, gt=0)

    def secret(self) -> str | None:
        return _read_secret(self.password, self.password_file, "influxdb.password_file")


class AlertmanagerConfig(_Section):
    url: str | None = "http://127.0.0.1:19093"
    # Firing alerts are re-sent this often; Alertmanager resolves one that stops coming.
    resend_interval_s: float = Field(default=30.0, gt=0)
    timeout_s: float = Field(default=5.0, gt=0)
    generator_url: str = ""


class HttpConfig(_Section):
    listen: str = "127.0.0.1:19108"
    # With a token, /api/* (and /metrics if protect_metrics) need "Authorization: Bearer <it>".
    token: SecretStr | None = None
    token_file: Path | None = None
    protect_metrics: bool = False

    def secret(self) -> str | None:
        return _read_secret(self.token, self.token_file, "http.token_file")

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("must be host:port")
        return v


class PipelineConfig(_Section):
    batch_max: int = Field(default=2000, ge=1)
    batch_interval_s: float = Field(default=0.05, gt=0, le=5)
    max_pending: int = Field(default=50_000, ge=1)


class DeadLetterConfig(_Section):
    capacity: int = Field(default=1000, ge=0, le=1_000_000)
    path: Path | None = None
    max_file_bytes: int = Field(default=10_000_000, ge=0)


_SLUG = r"^[a-z0-9][a-z0-9_-]{0,47}$"  # a tenant or zone topic level (sentinel.decode)


class DetectorConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
    type: str
    kinds: tuple[str, ...] = KINDS
    # A device group within those kinds (empty: every tenant, every zone). Several entries of one
    # type with other groups and parameters tune a detector per commune or district.
    tenants: tuple[Annotated[str, Field(pattern=_SLUG)], ...] = ()
    zones: tuple[Annotated[str, Field(pattern=_SLUG)], ...] = ()
    # ... and models: devices whose telemetry `info.model` is one of these (the last model a
    # device reported counts for its reports without one).
    models: tuple[Annotated[str, Field(pattern=r"^[\x20-\x7e]{1,64}$")], ...] = ()
    severity: Literal["info", "warning", "critical"] = "warning"
    summary: str = ""
    enabled: bool = True
    # "observe": scores and records what it would raise (measurement `observed`), alerts nobody.
    mode: Literal["alert", "observe"] = "alert"
    # MITRE ATT&CK for ICS technique the detector points at, e.g. "T0831" (manipulation of control).
    mitre: str = Field(default="", pattern=r"^(T[0-9]{4}(\.[0-9]{3})?)?$")
    # Alerts of detectors with the same group (default: the detector's name) in one zone and
    # time window become one incident.
    group: str = Field(default="", pattern=r"^([A-Za-z][A-Za-z0-9_-]{0,63})?$")
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        registry.get(v)  # raises with the list of known types
        return v

    def parsed_params(self) -> DetectorParams:
        return registry.parse_params(self.type, self.params)


class InhibitRule(_Section):
    """While a `source` detector fires in a zone, alerts of the `targets` detectors in that zone
    are suppressed (e.g. a zone-wide outage mutes each device's silence alert)."""

    source: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
    targets: tuple[str, ...] = Field(min_length=1)


class SuppressionConfig(_Section):
    """[[suppressions]]: a suppression or maintenance window from the config file."""

    matchers: dict[str, str] = Field(min_length=1)
    starts_at: datetime
    ends_at: datetime
    author: str = Field(min_length=1, max_length=128)
    reason: str = Field(min_length=1, max_length=1024)
    kind: Literal["suppression", "maintenance"] = "suppression"


class AlertingConfig(_Section):
    """[alerting]: incidents, storm protection and the operator's state (docs/alerting.md)."""

    # An alert joins an open incident of its group and zone; an incident with no firing
    # alert for this long (device time) closes.
    incident_quiet_s: float = Field(default=600.0, gt=0)
    # Storm protection: beyond this many devices an incident is notified as one roll-up.
    max_notified_per_incident: int = Field(default=10, ge=1, le=10_000)
    # Beyond this many open incidents, new ones fold into one overflow incident per detector.
    max_open_incidents: int = Field(default=500, ge=1, le=100_000)
    # Incidents of one group open in this many zones of a tenant at once are linked into one
    # fleet incident, notified as one SentinelFleetIncident (0 = off).
    fleet_min_zones: int = Field(default=3, ge=0, le=10_000)
    inhibit: tuple[InhibitRule, ...] = ()
    # Suppressions and suggestions made through the API, and the audit trail (JSON lines).
    state_file: Path | None = None
    audit_file: Path | None = None
    max_suppressions: int = Field(default=1000, ge=1, le=100_000)
    max_suppression_days: float = Field(default=90.0, gt=0)
    suggestion_expiry_days: float = Field(default=30.0, gt=0)
    # An MQTT topic where the agent publishes alert changes for automation ("" = off).
    mqtt_topic: str = Field(default="", pattern=r"^([A-Za-z0-9_/-]{1,128})?$")


class CheckpointConfig(_Section):
    # Detector state is saved here every interval_s and at shutdown, and loaded at start.
    path: Path | None = None
    interval_s: float = Field(default=30.0, gt=0)


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    json_format: bool = True


class TrafficSourcesConfig(_Section, TrafficConfig):
    """[traffic]: live traffic sources for the agent (docs/traffic.md), each off by default,
    plus every threshold of the traffic analyzer (TrafficConfig)."""

    broker_log_file: Path | None = None  # follow this Mosquitto log (tail -F)
    broker_log_from_start: bool = False  # read the file from its start, not its end
    broker_log_max_line_bytes: int = Field(default=262_144, ge=256, le=16 << 20)
    sys_topics: bool = False  # subscribe to $SYS/# with the [mqtt] settings: broker gauges
    capture_iface: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:@-]{1,15}$")
    bpf: str = Field(default="", max_length=4096)  # libpcap filter for capture_iface
    inventory_file: Path | None = None  # devices by IP: alerts carry them, features stored
    # Alerts with no inventory device carry these (kind `_traffic`, device_id `_s` + a bucket
    # of the subject): bounded labels, never an attacker's string.
    tenant: str = Field(default="_broker", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
    zone: str = Field(default="_broker", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
    subject_buckets: int = Field(default=64, ge=1, le=4096)
    resolve_after_s: float = Field(default=120.0, gt=0)  # quiet this long: alert resolved

    @property
    def enabled(self) -> bool:
        return bool(self.broker_log_file or self.sys_topics or self.capture_iface)

    @field_validator("inventory_file")
    @classmethod
    def _readable_inventory(cls, path: Path | None) -> Path | None:
        # Fail at start with the key named; each device's values are checked when it loads.
        if path is not None:
            try:
                load_inventory(path)
            except InventoryError as exc:
                raise ValueError(exc.reason) from None
        return path


class Config(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SENTINEL_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    mqtt: MqttConfig = MqttConfig()
    validation: ValidationConfig = ValidationConfig()
    influxdb: InfluxConfig = InfluxConfig()
    alertmanager: AlertmanagerConfig = AlertmanagerConfig()
    http: HttpConfig = HttpConfig()
    pipeline: PipelineConfig = PipelineConfig()
    deadletter: DeadLetterConfig = DeadLetterConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    log: LogConfig = LogConfig()
    traffic: TrafficSourcesConfig = TrafficSourcesConfig()
    alerting: AlertingConfig = AlertingConfig()
    detectors: tuple[DetectorConfig, ...] = ()
    suppressions: tuple[SuppressionConfig, ...] = ()

    @field_validator("detectors")
    @classmethod
    def _unique_detector_names(
        cls, detectors: tuple[DetectorConfig, ...]
    ) -> tuple[DetectorConfig, ...]:
        names = [d.name for d in detectors]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"detector names must be unique, repeated: {', '.join(dupes)}")
        return detectors

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file; nothing else is read.
        return (env_settings, init_settings)


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _problems(exc: ValidationError, prefix: str = "") -> list[str]:
    return [f"{prefix}{_where(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Relative `*_file`, `*_dir` and `path` values are relative to the config file, not the
    cwd: in every section, and in each detector's `params` (a model_dir, an inventory_file)."""
    tables = [section for section in data.values() if isinstance(section, dict)]
    detectors = data.get("detectors")
    for detector in detectors if isinstance(detectors, list) else []:
        if isinstance(detector, dict) and isinstance(detector.get("params"), dict):
            tables.append(detector["params"])
    for table in tables:
        for key, value in table.items():
            if (key.endswith(("_file", "_dir")) or key == "path") and isinstance(value, str):
                p = Path(value)
                table[key] = str(p if p.is_absolute() else base / p)


def load_config(path: Path | None) -> Config:
    """Read, override from the environment, validate. Raises ConfigError naming each bad key."""
    data: dict[str, Any] = {}
    source = str(path) if path else "defaults"
    if path is not None:
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(source, [f"cannot read the file: {exc.strerror}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
        _resolve_paths(data, path.parent)
    try:
        config = Config(**data)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from None
    problems: list[str] = []
    for i, det in enumerate(config.detectors):
        try:
            det.parsed_params()
        except ValidationError as exc:
            problems += _problems(exc, prefix=f"detectors[{i}].params.")
        unknown = sorted(set(det.kinds) - set(config.validation.kinds))
        if unknown:
            problems.append(f"detectors[{i}].kinds: unknown kind(s) {', '.join(unknown)}")
    problems += _alerting_problems(config)
    if problems:
        raise ConfigError(source, problems)
    return config


def _alerting_problems(config: Config) -> list[str]:
    problems = []
    names = {d.name for d in config.detectors}
    for i, rule in enumerate(config.alerting.inhibit):
        for where, name in [("source", rule.source)] + [("targets", t) for t in rule.targets]:
            if name not in names:
                problems.append(f"alerting.inhibit[{i}].{where}: no detector named {name!r}")
    for i, sup in enumerate(config.suppressions):
        if sup.starts_at.tzinfo is None or sup.ends_at.tzinfo is None:
            problems.append(f"suppressions[{i}]: times need a UTC offset, e.g. 2026-12-01T02:00Z")
        elif sup.ends_at <= sup.starts_at:
            problems.append(f"suppressions[{i}].ends_at: must be after starts_at")
        try:
            check_matchers(sup.matchers)
        except SuppressionError as exc:
            problems.append(f"suppressions[{i}].{exc}")
    return problems
