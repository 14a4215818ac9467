"""The operator's HTTP API: incidents, suppressions, feedback, suggestions, audit, detectors,
reload. Mounted under /api by sentinel.httpserver, behind its bearer token.

Reads are open to whoever holds the token (or to all when no token is set, on loopback);
writes need a configured token: an agent without one refuses every change (403).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from sentinel.alerting.alerts import AlertBook
from sentinel.alerting.desk import DeskError, OperatorDesk
from sentinel.engine import DetectorInstance, Engine

Store = Callable[[list[str]], Awaitable[None]]
Reload = Callable[[str], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class OperatorApi:
    book: AlertBook
    desk: OperatorDesk
    engine: Callable[[], Engine]  # the current engine (a reload may replace its detectors)
    store: Store  # where feedback points go (the InfluxDB writer)
    reload: Reload
    writable: bool  # False without a token: the API is read-only


def _time(value: object, what: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed.timestamp()
    raise DeskError(f"{what}: Unix seconds or an RFC 3339 time with a UTC offset")


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise DeskError("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise DeskError("the body must be a JSON object")
    return data


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guarded(api: OperatorApi, handler: Handler, write: bool) -> Handler:
    async def run(request: web.Request) -> web.StreamResponse:
        if write and not api.writable:
            return _json({"error": "set [http] token_file to enable changes"}, status=403)
        try:
            return await handler(request)
        except DeskError as exc:
            return _json({"error": str(exc)}, status=exc.status)

    return run


class _Handlers:
    def __init__(self, api: OperatorApi) -> None:
        self.api = api
        self.book = api.book
        self.desk = api.desk

    async def incidents(self, request: web.Request) -> web.StreamResponse:
        show_all = request.query.get("state", "open") == "all"
        book = self.book.incidents
        items = book.by_id.values() if show_all else book.open.values()
        return _json({"incidents": [i.to_dict() for i in items]})

    async def incident(self, request: web.Request) -> web.StreamResponse:
        found = self.book.incidents.get(request.match_info["id"])
        if found is None:
            raise DeskError("no such incident", status=404)
        alerts = [a.to_dict() for a in self.book.recent.values() if a.incident == found.id]
        return _json({"incident": found.to_dict(), "alerts": alerts[-200:]})

    async def suppressions(self, _: web.Request) -> web.StreamResponse:
        self.desk.expire(time.time())
        return _json({"suppressions": [s.to_dict() for s in self.book.suppressions.all()]})

    async def add_suppression(self, request: web.Request) -> web.StreamResponse:
        body, now = await _body(request), time.time()
        starts = _time(body.get("starts_at", now), "starts_at")
        if "ends_at" in body:
            ends = _time(body["ends_at"], "ends_at")
        elif isinstance(body.get("duration_s"), int | float):
            ends = starts + float(body["duration_s"])
        else:
            raise DeskError("ends_at or duration_s is required: nothing is muted forever")
        matchers = body.get("matchers")
        if not isinstance(matchers, dict):
            raise DeskError("matchers: an object of label → value")
        kind = body.get("kind", "suppression")
        if kind not in ("suppression", "maintenance"):
            raise DeskError("kind: suppression or maintenance")
        s = self.desk.add_suppression(
            matchers=matchers,
            starts_at=starts,
            ends_at=ends,
            author=str(body.get("author", "")),
            reason=str(body.get("reason", "")),
            kind=kind,
            now=now,
        )
        return _json({"suppression": s.to_dict()}, status=201)

    async def remove_suppression(self, request: web.Request) -> web.StreamResponse:
        author = request.query.get("author", "")
        s = self.desk.remove_suppression(request.match_info["id"], author, time.time())
        return _json({"removed": s.to_dict()})

    async def feedback(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        fb, made = self.desk.give_feedback(
            str(body.get("target", "")),
            str(body.get("verdict", "")),
            str(body.get("author", "")),
            str(body.get("note", "")),
            time.time(),
        )
        await self.api.store(self.desk.take_lines())
        return _json(
            {"feedback": fb.to_dict(), "suggestions": [s.to_dict() for s in made]}, status=201
        )

    async def suggestions(self, _: web.Request) -> web.StreamResponse:
        self.desk.expire(time.time())
        return _json({"suggestions": [s.to_dict() for s in self.desk.suggestions.values()]})

    async def accept(self, request: web.Request) -> web.StreamResponse:
        return await self._decide(request, accept=True)

    async def reject(self, request: web.Request) -> web.StreamResponse:
        return await self._decide(request, accept=False)

    async def _decide(self, request: web.Request, accept: bool) -> web.StreamResponse:
        body = await _body(request)
        author = str(body.get("author", ""))
        s = self.desk.decide(request.match_info["id"], accept, author, time.time())
        return _json({"suggestion": s.to_dict()})

    async def audit(self, _: web.Request) -> web.StreamResponse:
        return _json({"audit": list(self.desk.audit.recent)})

    async def detectors(self, _: web.Request) -> web.StreamResponse:
        instances = self.api.engine().instances
        return _json({"detectors": [_describe(inst, False) for inst in instances]})

    async def detector(self, request: web.Request) -> web.StreamResponse:
        for inst in self.api.engine().instances:
            if inst.source.name == request.match_info["name"]:
                return _json({"detector": _describe(inst, True)})
        raise DeskError("no such detector", status=404)

    async def reload(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request) if request.can_read_body else {}
        author = str(body.get("author", "api"))[:128] or "api"
        result = await self.api.reload(author)
        return _json(result, status=200 if result["ok"] else 400)


def add_routes(app: web.Application, api: OperatorApi) -> None:
    h = _Handlers(api)
    routes: list[tuple[str, str, Handler, bool]] = [
        ("GET", "/api/incidents", h.incidents, False),
        ("GET", "/api/incidents/{id}", h.incident, False),
        ("GET", "/api/suppressions", h.suppressions, False),
        ("POST", "/api/suppressions", h.add_suppression, True),
        ("DELETE", "/api/suppressions/{id}", h.remove_suppression, True),
        ("POST", "/api/feedback", h.feedback, True),
        ("GET", "/api/suggestions", h.suggestions, False),
        ("POST", "/api/suggestions/{id}/accept", h.accept, True),
        ("POST", "/api/suggestions/{id}/reject", h.reject, True),
        ("GET", "/api/audit", h.audit, False),
        ("GET", "/api/detectors", h.detectors, False),
        ("GET", "/api/detectors/{name}", h.detector, False),
        ("POST", "/api/reload", h.reload, True),
    ]
    for method, path, handler, write in routes:
        app.router.add_route(method, path, _guarded(api, handler, write))


_MAX_STATE_BYTES = 1 << 20


def _describe(inst: DetectorInstance, with_state: bool) -> dict[str, Any]:
    s = inst.source
    out: dict[str, Any] = {
        "name": s.name,
        "type": s.detector_type,
        "severity": s.severity,
        "mode": s.mode,
        "mitre": s.mitre,
        "group": s.incident_group,
        "kinds": sorted(inst.kinds),
        "tenants": sorted(inst.tenants),
        "zones": sorted(inst.zones),
        "params": inst.detector.params.model_dump(mode="json"),
        "tracked_devices": inst.detector.tracked_devices(),
    }
    if with_state:
        state = orjson.dumps(inst.detector.state_dict(), option=orjson.OPT_NON_STR_KEYS)
        out["state_bytes"] = len(state)
        # A fleet-wide state can be large: past 1 MiB only its size is shown.
        out["state"] = orjson.loads(state) if len(state) <= _MAX_STATE_BYTES else None
    return out
