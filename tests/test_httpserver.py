from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sentinel.alerting.alerts import AlertBook
from sentinel.deadletter import DeadLetters
from sentinel.httpserver import build_app
from sentinel.metrics import Metrics


def client(
    token: str | None, protect_metrics: bool = False
) -> TestClient[web.Request, web.Application]:
    metrics = Metrics()
    app = build_app(
        metrics,
        lambda: {"mqtt": True, "influxdb": False},
        AlertBook(metrics),
        DeadLetters(10),
        token=token,
        protect_metrics=protect_metrics,
    )
    return TestClient(TestServer(app))


@pytest.mark.parametrize("protect_metrics", [False, True])
async def test_token_guards_the_api_and_optionally_metrics(protect_metrics: bool) -> None:
    async with client("s3cret", protect_metrics) as http:
        assert (await http.get("/api/alerts")).status == 401
        wrong = await http.get("/api/alerts", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        good = {"Authorization": "Bearer s3cret"}
        assert (await http.get("/api/alerts", headers=good)).status == 200
        assert (await http.get("/api/deadletters", headers=good)).status == 200
        assert (await http.get("/metrics")).status == (401 if protect_metrics else 200)
        assert (await http.get("/metrics", headers=good)).status == 200
        assert (await http.get("/healthz")).status == 200  # probes stay open


async def test_without_a_token_everything_answers_and_readyz_tells_why() -> None:
    async with client(None) as http:
        assert (await http.get("/api/alerts")).status == 200
        ready = await http.get("/readyz")
        assert ready.status == 503
        assert await ready.json() == {"ready": False, "checks": {"mqtt": True, "influxdb": False}}
        bad = await http.get("/api/deadletters?limit=many")
        assert bad.status == 400
