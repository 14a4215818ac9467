"""Decode and validate MQTT payloads into canonical records, or reject them with a reason.

Everything here faces attacker-controlled bytes: sizes are checked before parsing, every
failure maps to one of a fixed set of reasons (a bounded metric label), nothing raises.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeGuard

import orjson

from detectors.model import CommandRecord, DeviceRef, Record, StatusRecord
from sentinel.config import ValidationConfig
from sentinel.topics import TopicPattern


class Reason(StrEnum):
    OVERSIZED = "oversized"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    BAD_TOPIC = "bad_topic"
    MISSING_ID = "missing_id"
    BAD_ID = "bad_id"
    ID_MISMATCH = "id_mismatch"
    UNKNOWN_KIND = "unknown_kind"
    MISSING_TS = "missing_ts"
    BAD_TS = "bad_ts"
    TS_FUTURE = "ts_future"
    TS_PAST = "ts_past"
    NO_METRICS = "no_metrics"
    TOO_MANY_METRICS = "too_many_metrics"
    BAD_METRIC_NAME = "bad_metric_name"
    BAD_TYPE = "bad_type"
    NON_FINITE = "non_finite"
    BAD_SEQ = "bad_seq"
    BAD_STATUS = "bad_status"
    BAD_INFO = "bad_info"
    BAD_COMMAND = "bad_command"
    DEVICE_CAP = "device_cap"


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str


class _Reject(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail


_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_ZONE = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}")
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_METRIC = re.compile(r"[a-z][a-z0-9_]{0,63}")
_MAX_SEQ = 2**63 - 1
# The `info` object (docs/wire-format.md): known keys only, short printable ASCII values. A
# malformed value rejects the message rather than being dropped, so that a forger cannot blank
# an identity field the identity detector compares.
INFO_KEYS = frozenset({"client_id", "src_ip", "firmware", "config_hash", "model"})
MAX_INFO_ENTRIES = 8
_MAX_KNOWN_METRICS = 4096
_INT64 = 1 << 63
# Command payloads: a name, optional sender, and a few numeric arguments.
_COMMAND_RESERVED = frozenset({"cmd", "ts", "client_id", "device_id", "seq"})
MAX_COMMAND_ARGS = 16
# Telemetry topics remembered with the device they name (see Decoder.decode), at most this
# many, and never more than validation.max_devices.
MAX_CACHED_TOPICS = 100_000


# What orjson refuses and the stdlib reads: NaN, Infinity, exponents past a float's range,
# integers past 64 bits.
_NON_FINITE_TOKEN = re.compile(r"NaN|Infinity|[0-9][eE][+-]?[0-9]{3}|[0-9]{20}")
_MAX_OPENERS = 256


def _loads(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses NaN and Infinity literals; the stdlib parser tells them apart from
    # garbage so that they are counted as non-finite, not as "not JSON".
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise _Reject(Reason.NOT_UTF8, "payload is not UTF-8") from None
    # The stdlib parser is ~30x slower, more so on deep nesting: an attacker must not be able
    # to buy it with garbage. Only text that may hold a non-finite number, and is not deeply
    # nested, gets it.
    if not _NON_FINITE_TOKEN.search(text) or text.count("{") + text.count("[") > _MAX_OPENERS:
        raise _Reject(Reason.NOT_JSON, "payload is not JSON")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise _Reject(Reason.NOT_JSON, "payload is not JSON") from None


def _object(payload: bytes) -> dict[str, Any]:
    body = _loads(payload)
    if not isinstance(body, dict):
        raise _Reject(Reason.NOT_OBJECT, "payload is not a JSON object")
    return body


def _timestamp(raw: Any) -> float:
    if isinstance(raw, bool):
        raise _Reject(Reason.BAD_TS, "ts is a boolean")
    if isinstance(raw, int | float):
        try:
            ts = float(raw)
        except OverflowError:  # an integer with hundreds of digits (the stdlib parser's)
            raise _Reject(Reason.NON_FINITE, "ts is not finite") from None
    elif isinstance(raw, str) and len(raw) <= 40:
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise _Reject(Reason.BAD_TS, "ts is not RFC 3339") from None
        if parsed.tzinfo is None:
            raise _Reject(Reason.BAD_TS, "ts has no time zone")
        ts = parsed.timestamp()
    else:
        raise _Reject(Reason.BAD_TS, "ts must be a number or an RFC 3339 string")
    if not math.isfinite(ts):
        raise _Reject(Reason.NON_FINITE, "ts is not finite")
    return ts


def _number(name: str, value: Any) -> float:
    """A finite float from a JSON number or boolean (booleans are 0/1)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, int | float):
        raise _Reject(Reason.BAD_TYPE, f"{name} is not a number")
    try:
        number = float(value)
    except OverflowError:  # an integer with hundreds of digits
        number = math.inf
    if not math.isfinite(number):
        raise _Reject(Reason.NON_FINITE, f"{name} is not finite")
    return number


def _printable_ascii(text: str) -> bool:
    """1 to 64 characters of 0x20-0x7E (info values, command senders): str methods, several
    times faster than a regular expression, on every report."""
    return 0 < len(text) <= 64 and text.isascii() and text.isprintable()


def _info(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_INFO_ENTRIES:
        raise _Reject(Reason.BAD_INFO, f"info must be an object of at most {MAX_INFO_ENTRIES}")
    out: dict[str, str] = {}
    for key, value in raw.items():
        if key not in INFO_KEYS:
            continue  # unknown keys are ignored, like unknown top-level keys
        if not isinstance(value, str) or not _printable_ascii(value):
            raise _Reject(Reason.BAD_INFO, f"info.{key} must be 1-64 printable ASCII characters")
        out[key] = value
    return out


def _plain_info(raw: Any) -> TypeGuard[dict[str, str]]:
    """Whether `raw` is an everyday info object, which `_info` would copy unchanged: known
    keys only, each with 1 to 64 printable ASCII characters (as `_printable_ascii`, inline:
    a call per value costs more than the check)."""
    if type(raw) is not dict or not INFO_KEYS.issuperset(raw):
        return False
    for value in raw.values():
        if type(value) is not str or not (
            0 < len(value) <= 64 and value.isascii() and value.isprintable()
        ):
            return False
    return True


class Decoder:
    """Turns (topic, payload) into a Record / StatusRecord / CommandRecord or a Rejection.

    `command` is the command topic pattern; without it command topics are `bad_topic`.
    `fast=False` keeps to the reference checks only (the fast path's answers are the same;
    tests compare the two).
    """

    def __init__(
        self,
        rules: ValidationConfig,
        telemetry: TopicPattern,
        status: TopicPattern,
        command: TopicPattern | None = None,
        *,
        fast: bool = True,
    ):
        self.rules = rules
        self.telemetry = telemetry
        self.status = status
        self.command = command
        self._kinds = frozenset(rules.kinds)
        # Metric names already checked: the pattern runs once per name, not once per value.
        # Bounded: past the cap (invented names), new names are checked every time.
        self._metric_names: set[str] = set()
        # Telemetry topics whose levels passed every check, with the DeviceRef they name: a
        # device's next reports skip the topic match and the id, kind, tenant and zone checks
        # (only the payload's device_id remains to compare). Attackers choose topics: only
        # valid ones (so short ones) are kept, up to a cap, then none is added.
        self._topic_devices: dict[str, DeviceRef] = {}
        has_id = "device_id" in telemetry.placeholders
        self._max_topics = min(rules.max_devices, MAX_CACHED_TOPICS) if fast and has_id else 0

    def decode(
        self, topic: str, payload: bytes, now: float
    ) -> Record | StatusRecord | CommandRecord | Rejection:
        try:
            if len(payload) > self.rules.max_payload_bytes:
                raise _Reject(Reason.OVERSIZED, f"{len(payload)} bytes")
            device = self._topic_devices.get(topic)
            if device is not None:
                return self._known_telemetry(device, payload, now)
            levels = self.telemetry.match(topic)
            if levels is not None:
                return self._telemetry(topic, levels, payload, now)
            levels = self.status.match(topic)
            if levels is not None:
                return self._status(levels, payload, now)
            levels = self.command.match(topic) if self.command is not None else None
            if levels is not None:
                return self._command(levels, payload, now)
            raise _Reject(Reason.BAD_TOPIC, "topic fits no configured pattern")
        except _Reject as r:
            return Rejection(r.reason, r.detail)

    def _device(self, levels: dict[str, str], body: dict[str, Any] | None) -> DeviceRef:
        device_id = levels.get("device_id")
        claimed = body.get("device_id") if body is not None else None
        if device_id is None:
            device_id = claimed if isinstance(claimed, str) else None
        elif claimed is not None and claimed != device_id:
            raise _Reject(Reason.ID_MISMATCH, "payload device_id differs from the topic's")
        if not device_id:
            raise _Reject(Reason.MISSING_ID, "no device id")
        if not _DEVICE_ID.fullmatch(device_id):
            raise _Reject(Reason.BAD_ID, "device id has forbidden characters or length")
        kind = levels.get("kind", "")
        if kind not in self._kinds:
            raise _Reject(Reason.UNKNOWN_KIND, "kind is not one of the configured kinds")
        tenant, zone = levels.get("tenant", "default"), levels.get("zone", "default")
        if not _TENANT.fullmatch(tenant) or not _ZONE.fullmatch(zone):
            raise _Reject(Reason.BAD_TOPIC, "tenant or zone has forbidden characters or length")
        # Interned: every per-device state is keyed by a DeviceRef, and a fresh copy of the
        # same tenant, zone and kind text in each would cost ~150 bytes per device.
        return DeviceRef(sys.intern(tenant), sys.intern(zone), sys.intern(kind), device_id)

    def _check_time(self, ts: float, now: float) -> None:
        if ts > now + self.rules.max_future_s:
            raise _Reject(Reason.TS_FUTURE, f"ts is {ts - now:.0f} s ahead")
        if ts < now - self.rules.max_past_s:
            raise _Reject(Reason.TS_PAST, f"ts is {now - ts:.0f} s old")

    def _telemetry(self, topic: str, levels: dict[str, str], payload: bytes, now: float) -> Record:
        body = _object(payload)
        device = self._device(levels, body)
        # The id came from the topic (_max_topics is 0 otherwise), so the topic alone made
        # this device: the payload could only have failed the device_id comparison.
        if len(self._topic_devices) < self._max_topics:
            self._topic_devices[topic] = device
        return self._record(device, body, now)

    def _known_telemetry(self, device: DeviceRef, payload: bytes, now: float) -> Record:
        """`_telemetry` for a remembered topic: the same answers, the everyday report inline."""
        body = _object(payload)
        claimed = body.get("device_id")
        if claimed is not None and claimed != device.device_id:
            raise _Reject(Reason.ID_MISMATCH, "payload device_id differs from the topic's")
        # A float ts within bounds (NaN fails every comparison), a plain seq, and metrics
        # with known names and finite numbers (their sum is finite; a non-number makes it
        # raise TypeError; booleans and integers convert as _number does). Anything else:
        # the reference checks, in their order, give the answer.
        ts = body.get("ts")
        seq = body.get("seq")
        raw = body.get("metrics")
        rules = self.rules
        if (
            type(ts) is float
            and now - rules.max_past_s <= ts <= now + rules.max_future_s
            and (seq is None or (type(seq) is int and 0 <= seq <= _MAX_SEQ))
            and type(raw) is dict
            and 0 < len(raw) <= rules.max_metrics
            and self._metric_names.issuperset(raw)
        ):
            try:
                total = sum(raw.values())
                metrics = {k: float(v) for k, v in raw.items()} if total - total == 0.0 else None
            except (TypeError, OverflowError):
                metrics = None
            if metrics is not None:
                # The parsed info object is the decoder's own: kept as it is when plain.
                info = body.get("info")
                return Record(device, ts, metrics, seq, info if _plain_info(info) else _info(info))
        return self._record(device, body, now)

    def _record(self, device: DeviceRef, body: dict[str, Any], now: float) -> Record:
        if "ts" not in body:
            raise _Reject(Reason.MISSING_TS, "no ts")
        ts = _timestamp(body["ts"])
        self._check_time(ts, now)
        seq = body.get("seq")
        if seq is not None and (
            isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= _MAX_SEQ
        ):
            raise _Reject(Reason.BAD_SEQ, "seq must be an integer >= 0")
        metrics = self._metrics(body.get("metrics"))
        return Record(device, ts, metrics, seq, _info(body.get("info")))

    def _metrics(self, raw: Any) -> dict[str, float]:
        if not isinstance(raw, dict) or not raw:
            raise _Reject(Reason.NO_METRICS, "metrics must be a non-empty object")
        if len(raw) > self.rules.max_metrics:
            raise _Reject(Reason.TOO_MANY_METRICS, f"{len(raw)} metrics")
        known = self._metric_names
        out: dict[str, float] = {}
        for name, value in raw.items():
            # The common cases, inline: a known name and a finite float (x - x is NaN for
            # NaN and infinities) or an integer within 64 bits (what orjson gives).
            if name in known:
                kind = type(value)
                if kind is float and value - value == 0.0:
                    out[name] = value
                    continue
                if kind is int and -_INT64 <= value < _INT64:
                    out[name] = float(value)
                    continue
            if name not in known:
                if not _METRIC.fullmatch(name):
                    raise _Reject(Reason.BAD_METRIC_NAME, "metric name has forbidden characters")
                if len(known) < _MAX_KNOWN_METRICS:
                    known.add(name)
            out[name] = _number(f"metric {name}", value)
        return out

    def _command(self, levels: dict[str, str], payload: bytes, now: float) -> CommandRecord:
        body = _object(payload)
        device = self._device(levels, body)
        name = body.get("cmd")
        if not isinstance(name, str) or not _METRIC.fullmatch(name):
            raise _Reject(Reason.BAD_COMMAND, "cmd must be a name like set_dim")
        sender = body.get("client_id")
        if sender is not None and (not isinstance(sender, str) or not _printable_ascii(sender)):
            raise _Reject(Reason.BAD_COMMAND, "client_id must be 1-64 printable ASCII characters")
        ts = now
        if "ts" in body:
            ts = _timestamp(body["ts"])
            self._check_time(ts, now)
        args: dict[str, float] = {}
        for key, value in body.items():
            if key in _COMMAND_RESERVED or not isinstance(value, bool | int | float):
                continue  # text and nested values are not arguments a detector compares
            if not _METRIC.fullmatch(key):
                raise _Reject(Reason.BAD_COMMAND, "argument name has forbidden characters")
            if len(args) == MAX_COMMAND_ARGS:
                raise _Reject(Reason.BAD_COMMAND, f"more than {MAX_COMMAND_ARGS} arguments")
            args[key] = _number(f"argument {key}", value)
        return CommandRecord(device, ts, name, args, sender)

    def _status(self, levels: dict[str, str], payload: bytes, now: float) -> StatusRecord:
        text = payload.strip()
        body: dict[str, Any] | None = None
        state: object
        if text in (b"online", b"offline"):
            state = text.decode()
        else:
            parsed = _loads(payload)
            if not isinstance(parsed, dict):
                raise _Reject(Reason.BAD_STATUS, "status must be online, offline or an object")
            body = parsed
            state = body.get("state")
        device = self._device(levels, body)
        if state not in ("online", "offline"):
            raise _Reject(Reason.BAD_STATUS, "state must be online or offline")
        # A last will carries no timestamp: it is published by the broker, now.
        ts = _timestamp(body["ts"]) if body is not None and "ts" in body else now
        # Retained statuses can be old by design, so only the future bound applies.
        if ts > now + self.rules.max_future_s:
            raise _Reject(Reason.TS_FUTURE, f"ts is {ts - now:.0f} s ahead")
        return StatusRecord(device, ts, state == "online")
