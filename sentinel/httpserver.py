"""The agent's HTTP face: /metrics for Prometheus, /healthz, /readyz, and /api (the alert and
dead-letter views here; the operator's API in sentinel.operator_api)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sentinel.alerting.alerts import AlertBook
from sentinel.deadletter import DeadLetters
from sentinel.metrics import Metrics
from sentinel.operator_api import OperatorApi, add_routes

ReadinessCheck = Callable[[], dict[str, bool]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def require_token(token: str | None, protect_metrics: bool) -> Middleware:
    """Bearer-token check for /api/* (and /metrics when asked); probes stay open."""
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        guarded = request.path.startswith("/api/") or (
            protect_metrics and request.path == "/metrics"
        )
        if expected is not None and guarded:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return web.json_response(
                    {"error": "a valid bearer token is required"},
                    status=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await handler(request)

    return check


def build_app(
    metrics: Metrics,
    readiness: ReadinessCheck,
    book: AlertBook,
    deadletters: DeadLetters,
    token: str | None = None,
    protect_metrics: bool = False,
    operator: OperatorApi | None = None,
) -> web.Application:
    async def get_metrics(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks = readiness()
        ready = all(checks.values())
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)

    async def alerts(request: web.Request) -> web.Response:
        # ?recent=N adds the last N alert changes (resolved, observed) to the active ones.
        try:
            recent = max(0, min(10_000, int(request.query.get("recent", "0"))))
        except ValueError:
            return web.json_response({"error": "recent must be an integer"}, status=400)
        active: list[dict[str, Any]] = [a.to_dict() for a in book.active.values()]
        history = [a.to_dict() for a in book.history[-recent:]] if recent else []
        return web.json_response({"active": active, "recent": history})

    async def dead_letters(request: web.Request) -> web.Response:
        try:
            limit = max(1, min(1000, int(request.query.get("limit", "100"))))
        except ValueError:
            return web.json_response({"error": "limit must be an integer"}, status=400)
        return web.json_response({"total": deadletters.total, "recent": deadletters.recent(limit)})

    app = web.Application(
        client_max_size=16384, middlewares=[require_token(token, protect_metrics)]
    )
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/alerts", alerts)
    app.router.add_get("/api/deadletters", dead_letters)
    if operator is not None:
        add_routes(app, operator)
    return app
