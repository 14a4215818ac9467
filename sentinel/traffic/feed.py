"""`POST /api/traffic`: what `sentinel capture --agent` found, into the running agent.

Privilege separation: the capture runs in its own process, which holds CAP_NET_RAW; the agent,
which does not, receives the capture's alert hits and its inventory devices' flow windows over
its HTTP API (behind the bearer token) and delivers them as its own capture would
(`TrafficSources.feed`: the same alert bridge, `Pipeline.ingest` for the windows).

The body is a trust boundary even behind the token. At most `MAX_BODY_BYTES` (the app's
`client_max_size`; larger: 413); not a JSON object of two lists: 400. Each item is checked on
its own: a bad one is skipped and counted by reason (`sentinel_traffic_feed_items_total`),
never the whole batch, so traffic an attacker shapes cannot make the agent refuse the rest.

    {"alerts": [ALERT, ...], "features": [WINDOW, ...]}
    ALERT  = {"kind", "subject", "subject_sha256", "src", "device": DEVICE | null,
              "first", "last", "count", "evidence": {key: string | number | bool | null}}
    WINDOW = {"device": DEVICE, "ts", "metrics": {name: number, one per FEATURE_METRICS}}
    DEVICE = {"tenant", "zone", "kind", "device_id"}

`alert_item` and `window_item` write them (the capture's side); `FeedCheck` reads them.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from typing import Any, Literal

import orjson
import structlog
from aiohttp import web

from detectors.model import DeviceRef, EvidenceValue, Record
from sentinel.admission import Admission
from sentinel.config import Config
from sentinel.metrics import Metrics
from sentinel.pipeline import Pipeline
from sentinel.traffic.alerts import TrafficAlert
from sentinel.traffic.config import ALERT_KINDS
from sentinel.traffic.flows import FEATURE_METRICS, FlowFeatures
from sentinel.traffic.live import (
    TrafficSources,
    device_problem,
    net_record,
    printable,
    subject_digest,
)

log = structlog.get_logger(__name__)

PATH = "/api/traffic"
MAX_BODY_BYTES = 16384  # sentinel.httpserver's client_max_size: the client packs bodies to fit
MAX_ITEMS = 256  # per list; a full body holds far fewer
MAX_EVIDENCE = 16  # evidence entries of one alert (the detections write at most a dozen)
TEXT = 256  # subjects and evidence strings, as the agent shows them (live.evidence)
SRC = 64
_MAX_NUMBER = 2.0**53  # counts and feature values: exact in a float, far above any real one
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ALERT_KEYS = frozenset(
    {"kind", "subject", "subject_sha256", "src", "device", "first", "last", "count", "evidence"}
)
_WINDOW_KEYS = frozenset({"device", "ts", "metrics"})
_DEVICE_KEYS = ("tenant", "zone", "kind", "device_id")
_FEATURES = frozenset(FEATURE_METRICS)

Item = Literal["alert", "feature"]
REASONS = ("bad_item", "bad_kind", "bad_number", "bad_time", "bad_device", "device_cap")


# --- the capture's side ----------------------------------------------------------------------


def _device_item(d: DeviceRef | None) -> dict[str, str] | None:
    if d is None:
        return None
    return {"tenant": d.tenant, "zone": d.zone, "kind": d.kind, "device_id": d.device_id}


def alert_item(alert: TrafficAlert) -> dict[str, Any]:
    """An alert's current state for the wire, its strings cut as the agent would show them
    (the agent cuts them again, to the same result)."""
    evidence = {
        printable(k, SRC): printable(v, TEXT) if isinstance(v, str) else v
        for k, v in list(alert.evidence.items())[:MAX_EVIDENCE]
    }
    return {
        "kind": alert.kind,
        "subject": printable(alert.subject, TEXT),
        "subject_sha256": subject_digest(alert.subject).hex(),  # the whole subject's bucket
        "src": printable(alert.src, SRC),
        "device": _device_item(alert.device),
        "first": alert.first,
        "last": alert.last,
        "count": alert.count,
        "evidence": evidence,
    }


def window_item(features: FlowFeatures) -> dict[str, Any] | None:
    """An inventory device's window for the wire (None for other hosts, as in the agent)."""
    if features.device is None:
        return None
    return {
        "device": _device_item(features.device),
        "ts": features.end,
        "metrics": features.metrics(),
    }


# --- the agent's side ------------------------------------------------------------------------


class Rejected(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _number(value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected("bad_item")
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise Rejected("bad_number")
    return number


def _text(value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise Rejected("bad_item")
    return printable(value, limit)


class FeedCheck:
    """Turns wire items into what `TrafficSources.feed` takes, or says why not."""

    def __init__(self, config: Config, admission: Admission) -> None:
        self._traffic = config.traffic
        self._validation = config.validation
        self._admission = admission

    def _time(self, value: object, now: float) -> float:
        ts = _number(value, -math.inf, math.inf)
        v = self._validation
        if not now - v.max_past_s <= ts <= now + v.max_future_s:
            raise Rejected("bad_time")
        return ts

    def _device(self, value: object) -> DeviceRef:
        if not isinstance(value, dict) or set(value) != set(_DEVICE_KEYS):
            raise Rejected("bad_item")
        parts = [value[k] for k in _DEVICE_KEYS]
        if not all(isinstance(p, str) for p in parts):
            raise Rejected("bad_item")
        device = DeviceRef(*parts)
        if device_problem(device, self._validation.kinds) is not None:
            raise Rejected("bad_device")
        return device

    def alert(self, raw: object, now: float) -> tuple[TrafficAlert, bytes | None]:
        if not isinstance(raw, dict) or not set(raw) <= _ALERT_KEYS:
            raise Rejected("bad_item")
        kind = raw.get("kind")
        if kind not in ALERT_KINDS:
            raise Rejected("bad_kind")
        digest = raw.get("subject_sha256")
        if digest is not None and not (isinstance(digest, str) and _HEX64.fullmatch(digest)):
            raise Rejected("bad_item")
        raw_evidence = raw.get("evidence", {})
        if not isinstance(raw_evidence, dict) or len(raw_evidence) > MAX_EVIDENCE:
            raise Rejected("bad_item")
        evidence: dict[str, EvidenceValue] = {}
        for key, value in raw_evidence.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                _number(value, -_MAX_NUMBER, _MAX_NUMBER)  # checked; an int stays an int
            elif not (value is None or isinstance(value, bool | str)):
                raise Rejected("bad_item")
            evidence[printable(key, SRC)] = (
                printable(value, TEXT) if isinstance(value, str) else value
            )
        count = raw.get("count")
        if not isinstance(count, int):
            raise Rejected("bad_item")
        _number(count, 0, _MAX_NUMBER)
        first, last = self._time(raw.get("first"), now), self._time(raw.get("last"), now)
        if first > last:
            raise Rejected("bad_time")
        subject, src = _text(raw.get("subject"), TEXT), _text(raw.get("src"), SRC)
        device = None if raw.get("device") is None else self._device(raw["device"])
        # Last, once the item is known good: admission remembers the ids it lets in.
        if device is not None and not self._admission.admit(device.device_id):
            device = None  # beyond the device cap: the alert stands, on a bucket placeholder
        alert = TrafficAlert(
            kind=kind,
            severity=self._traffic.severities[kind],  # the agent's, not the sender's
            subject=subject,
            src=src,
            device=device,
            first=first,
            last=last,
            count=count,
            evidence=evidence,
        )
        return alert, bytes.fromhex(digest) if digest is not None else None

    def window(self, raw: object, now: float) -> Record:
        if not isinstance(raw, dict) or set(raw) != _WINDOW_KEYS:
            raise Rejected("bad_item")
        metrics = raw["metrics"]
        if not isinstance(metrics, dict) or set(metrics) != _FEATURES:
            raise Rejected("bad_item")
        values = {name: _number(metrics[name], 0, _MAX_NUMBER) for name in FEATURE_METRICS}
        ts = self._time(raw["ts"], now)
        device = self._device(raw["device"])
        if not self._admission.admit(device.device_id):
            raise Rejected("device_cap")
        return net_record(device, ts, values)


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class FeedHandler:
    def __init__(self, sources: TrafficSources, check: FeedCheck, writable: bool) -> None:
        self.sources = sources
        self.check = check
        self.writable = writable
        self._counter = sources.metrics.feed_items
        for item in ("alert", "feature"):
            for result in ("accepted", *REASONS):
                self._counter.labels(item, result)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self.writable:
            return _json({"error": "set [http] token_file to accept a capture's feed"}, 403)
        try:
            body = orjson.loads(await request.read())  # over client_max_size: 413 here
        except orjson.JSONDecodeError:
            return _json({"error": "the body must be a JSON object"}, 400)
        if (
            not isinstance(body, dict)
            or not set(body) <= {"alerts", "features"}
            or not all(isinstance(v, list) and len(v) <= MAX_ITEMS for v in body.values())
        ):
            return _json(
                {
                    "error": f'the body is {{"alerts": [...], "features": [...]}}, '
                    f"at most {MAX_ITEMS} items each"
                },
                400,
            )
        now = time.time()
        rejected: Counter[tuple[Item, str]] = Counter()
        hits: list[tuple[TrafficAlert, bytes | None]] = []
        windows: list[Record] = []
        for raw in body.get("alerts", []):
            try:
                hits.append(self.check.alert(raw, now))
            except Rejected as exc:
                rejected["alert", exc.reason] += 1
        for raw in body.get("features", []):
            try:
                windows.append(self.check.window(raw, now))
            except Rejected as exc:
                rejected["feature", exc.reason] += 1
        try:
            await self.sources.feed(hits, windows)
        except Exception:  # a bug must not take the API down: log it, tell the sender
            log.exception("traffic_feed_failed")
            return _json({"error": "the agent failed to deliver this batch"}, 500)
        self._counter.labels("alert", "accepted").inc(len(hits))
        self._counter.labels("feature", "accepted").inc(len(windows))
        for (item, reason), n in rejected.items():
            self._counter.labels(item, reason).inc(n)
        if rejected:
            log.warning(
                "traffic_feed_rejected", **{f"{i}_{r}": n for (i, r), n in rejected.items()}
            )
        return _json(
            {
                "accepted": {"alerts": len(hits), "features": len(windows)},
                "rejected": {f"{i}:{r}": n for (i, r), n in sorted(rejected.items())},
            }
        )


def add_routes(
    app: web.Application, config: Config, pipeline: Pipeline, metrics: Metrics, writable: bool
) -> None:
    """Serve `POST /api/traffic` on the agent's app (before it starts). `writable` is False
    without an API token: the feed is then refused (403), like the operator's changes."""
    sources = TrafficSources.for_feed(config, pipeline, metrics)
    check = FeedCheck(config, pipeline.admission)
    app.router.add_post(PATH, FeedHandler(sources, check, writable).handle)
