"""`POST /api/traffic` (sentinel.traffic.feed) and the capture's sender (feed_client), on a
real aiohttp app with a real pipeline and alert book; only the InfluxDB writer is replaced by
a list of the line-protocol lines it would have been given."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest

from detectors.model import DeviceRef
from sentinel.agent import build_decoder
from sentinel.alerting.build import build_book
from sentinel.config import Config
from sentinel.deadletter import DeadLetters
from sentinel.engine import Engine
from sentinel.httpserver import build_app
from sentinel.metrics import Metrics
from sentinel.pipeline import Pipeline
from sentinel.store.lineprotocol import lines_for
from sentinel.traffic import feed
from sentinel.traffic.alerts import TrafficAlert
from sentinel.traffic.feed_client import AgentFeed, agent_post
from sentinel.traffic.flows import FEATURE_METRICS, FlowFeatures
from sentinel.traffic.live import AlertBridge, TrafficSources, feature_record, traffic_tasks
from tests.conftest import free_port

TOKEN = "feed-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CAM = DeviceRef("lyon", "part-dieu", "video", "cam-1")


class Lines:
    """Where the pipeline's InfluxDB writer would have put the lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def put(self, lines: list[str]) -> None:
        self.lines += lines


@dataclass
class Agent:
    app: web.Application
    config: Config
    pipeline: Pipeline
    metrics: Metrics
    store: Lines

    @property
    def sources(self) -> TrafficSources:
        found = TrafficSources.fed_sources(self.pipeline, self.metrics)
        assert found is not None
        return found


def make_agent(token: str | None = TOKEN, **sections: dict[str, Any]) -> Agent:
    data: dict[str, Any] = {**sections}
    data["traffic"] = {"tenant": "feedt", "zone": "feedz", **sections.get("traffic", {})}
    config = Config.model_validate(data)
    metrics, store = Metrics(), Lines()
    book = build_book(config, metrics)
    pipeline = Pipeline(
        decoder=build_decoder(config),
        store=store,
        engine=Engine([]),
        book=book,
        notifiers=[],
        metrics=metrics,
        deadletters=DeadLetters(10),
        max_devices=config.validation.max_devices,
    )
    app = build_app(metrics, lambda: {}, book, DeadLetters(10), token=token)
    feed.add_routes(app, config, pipeline, metrics, token is not None)
    return Agent(app, config, pipeline, metrics, store)


@pytest.fixture
async def agent() -> AsyncIterator[tuple[Agent, TestClient[web.Request, web.Application]]]:
    a = make_agent()
    async with TestClient(TestServer(a.app)) as http:
        yield a, http


def traffic_alert(**kw: Any) -> TrafficAlert:
    now = time.time()
    values: dict[str, Any] = {
        "kind": "brute_force_user",
        "severity": "critical",
        "subject": "admin",
        "src": "10.0.0.7",
        "device": None,
        "first": now - 5,
        "last": now - 1,
        "count": 10,
        "evidence": {"last_code": 5, "ips": "10.0.0.7", "n_ips": 1},
    }
    values.update(kw)
    return TrafficAlert(**values)


def window(device: DeviceRef | None = CAM, end: float | None = None) -> FlowFeatures:
    end = time.time() - 1 if end is None else end
    return FlowFeatures(end - 60, end, "10.0.0.7", device, 900, 300, 9, 3, 2, 2, 1, 1, 0, 0, ("a",))


async def post(
    http: TestClient[web.Request, web.Application], body: object, headers: Any = AUTH
) -> tuple[int, Any]:
    resp = await http.post(feed.PATH, data=orjson.dumps(body), headers=headers)
    return resp.status, await resp.json(content_type=None)


def in_agent(alert: TrafficAlert, config: Config) -> tuple[Any, Any]:
    """What the agent's own capture makes of the same alert: source and transition."""
    bridge = AlertBridge(config.traffic)
    bridge.touch(alert, "capture")
    [(source, [transition])] = bridge.flush(0.0, 0.0)
    return source, transition


# --- the endpoint ------------------------------------------------------------------------------


async def test_writes_need_the_token_and_a_configured_one() -> None:
    a = make_agent()
    async with TestClient(TestServer(a.app)) as http:
        assert (await post(http, {}, headers={}))[0] == 401
        assert (await post(http, {}, headers={"Authorization": "Bearer nope"}))[0] == 401
        assert await post(http, {}) == (
            200,
            {"accepted": {"alerts": 0, "features": 0}, "rejected": {}},
        )
    open_agent = make_agent(token=None)  # no token: the API is open, so the feed is refused
    async with TestClient(TestServer(open_agent.app)) as http:
        status, body = await post(http, {"alerts": [feed.alert_item(traffic_alert())]}, {})
        assert status == 403
        assert "token_file" in body["error"]
    assert not open_agent.pipeline.book.active


async def test_a_fed_alert_is_the_alert_an_in_agent_capture_raises(
    agent: tuple[Agent, TestClient[web.Request, web.Application]],
) -> None:
    a, http = agent
    nasty = "evil\n\x1b[31m" + "é" * 5000  # cut on the wire: the bucket is the whole one's
    alerts = [
        traffic_alert(),
        traffic_alert(kind="forbidden_subscription", subject=nasty, evidence={"filters": nasty}),
        traffic_alert(kind="telnet_ssh_scan", subject="10.0.0.7", device=CAM, count=12),
    ]
    status, body = await post(http, {"alerts": [feed.alert_item(x) for x in alerts]})
    assert (status, body["accepted"]["alerts"], body["rejected"]) == (200, 3, {})
    stored = [line for line in a.store.lines if line.startswith("alerts,")]
    assert len(stored) == 3
    by_name = {x.source.name: x for x in a.pipeline.book.active.values()}
    for sent in alerts:
        source, t = in_agent(sent, a.config)
        got = by_name[source.name]
        assert (got.source, got.device, got.starts_at) == (source, t.device, t.ts)
        assert (got.summary, got.evidence) == (t.summary, t.evidence)
        assert got.evidence["origin"] == "capture"
    scan = by_name["traffic-telnet-ssh-scan"]
    assert scan.device == CAM
    sub = by_name["traffic-forbidden-subscription"]
    assert (sub.device.tenant, sub.device.zone, sub.device.kind) == ("feedt", "feedz", "_traffic")
    assert len(sub.summary) < 250
    assert sub.summary.isprintable()
    assert isinstance(sub.evidence["filters"], str)
    assert len(sub.evidence["filters"]) == 257
    # Hit again (as the next batch would): still one alert each.
    status, _ = await post(http, {"alerts": [feed.alert_item(x) for x in alerts]})
    assert status == 200
    assert len(a.pipeline.book.active) == 3


async def test_the_agents_severity_counts_not_the_senders() -> None:
    a = make_agent(traffic={"severities": {"brute_force_user": "info"}})
    async with TestClient(TestServer(a.app)) as http:
        item = feed.alert_item(traffic_alert(severity="critical"))
        assert (await post(http, {"alerts": [item]}))[0] == 200
    [alert] = a.pipeline.book.active.values()
    assert alert.source.severity == "info"


async def test_fed_windows_are_stored_as_an_in_agent_capture_stores_them(
    agent: tuple[Agent, TestClient[web.Request, web.Application]],
) -> None:
    a, http = agent
    windows = [window(), window(DeviceRef("lyon", "gerland", "lighting", "lamp-9"))]
    items = [feed.window_item(w) for w in windows]
    assert feed.window_item(window(device=None)) is None  # not an inventory device: not sent
    status, body = await post(http, {"features": items})
    assert (status, body["accepted"]["features"]) == (200, 2)
    expected = lines_for([r for w in windows if (r := feature_record(w)) is not None])
    assert a.store.lines == expected
    assert "net_bytes_out=900" in expected[0]


def _bad_alerts() -> list[tuple[dict[str, Any], str]]:
    good = feed.alert_item(traffic_alert())
    now = time.time()
    return [
        ({**good, "kind": "pwned"}, "bad_kind"),
        ({**good, "kind": None}, "bad_kind"),
        ({**good, "count": 2.5}, "bad_item"),
        ({**good, "count": True}, "bad_item"),
        ({**good, "count": -1}, "bad_number"),
        ({**good, "count": 2**60}, "bad_number"),
        ({**good, "first": "yesterday"}, "bad_item"),
        ({**good, "first": now, "last": now - 10}, "bad_time"),
        ({**good, "last": now + 10_000}, "bad_time"),
        ({**good, "first": 0, "last": 1}, "bad_time"),
        ({**good, "subject": 12}, "bad_item"),
        ({**good, "subject_sha256": "zz"}, "bad_item"),
        ({**good, "severity": "info"}, "bad_item"),  # unknown key
        ({**good, "evidence": {"a": {"nested": 1}}}, "bad_item"),
        ({**good, "evidence": {"a": [1]}}, "bad_item"),
        ({**good, "evidence": {"n": 1e300}}, "bad_number"),
        ({**good, "evidence": {f"k{i}": i for i in range(17)}}, "bad_item"),
        (
            {**good, "device": {"tenant": "Lyon!", "zone": "z", "kind": "video", "device_id": "c"}},
            "bad_device",
        ),
        (
            {**good, "device": {"tenant": "l", "zone": "z", "kind": "toaster", "device_id": "c"}},
            "bad_device",
        ),
        ({**good, "device": {"tenant": "l", "zone": "z", "kind": "video"}}, "bad_item"),
        ("not an object", "bad_item"),  # type: ignore[list-item]
    ]


async def test_each_bad_alert_is_skipped_and_counted_not_the_batch(
    agent: tuple[Agent, TestClient[web.Request, web.Application]],
) -> None:
    a, http = agent
    bad = _bad_alerts()
    good = feed.alert_item(traffic_alert(subject="good-one"))
    status, body = await post(http, {"alerts": [*(item for item, _ in bad), good]})
    assert status == 200, body
    assert body["accepted"]["alerts"] == 1
    expected: dict[str, int] = {}
    for _, reason in bad:
        expected[f"alert:{reason}"] = expected.get(f"alert:{reason}", 0) + 1
    assert body["rejected"] == expected
    [alert] = a.pipeline.book.active.values()
    assert alert.evidence["subject"] == "good-one"
    text = generate_latest(a.metrics.registry).decode()
    assert 'sentinel_traffic_feed_items_total{item="alert",result="bad_kind"} 2.0' in text
    assert 'sentinel_traffic_feed_items_total{item="alert",result="accepted"} 1.0' in text


async def test_bad_windows_are_skipped_and_counted(
    agent: tuple[Agent, TestClient[web.Request, web.Application]],
) -> None:
    a, http = agent
    good = feed.window_item(window())
    assert good is not None
    metrics = good["metrics"]
    bad = [
        ({**good, "metrics": {**metrics, "bytes_out": -1}}, "bad_number"),
        ({**good, "metrics": {**metrics, "bytes_out": 2**60}}, "bad_number"),
        ({**good, "metrics": {**metrics, "bytes_out": "9"}}, "bad_item"),
        ({**good, "metrics": {**metrics, "extra": 1}}, "bad_item"),
        ({**good, "metrics": {k: v for k, v in metrics.items() if k != "ssh"}}, "bad_item"),
        ({**good, "ts": time.time() + 86400}, "bad_time"),
        ({**good, "ts": time.time() - 30 * 86400}, "bad_time"),
        ({**good, "device": None}, "bad_item"),
        ({**good, "device": {**good["device"], "device_id": "x" * 65}}, "bad_device"),
        ({**good, "more": 1}, "bad_item"),
    ]
    status, body = await post(http, {"features": [item for item, _ in bad]})
    assert status == 200
    assert body["accepted"]["features"] == 0
    expected: dict[str, int] = {}
    for _, reason in bad:
        expected[f"feature:{reason}"] = expected.get(f"feature:{reason}", 0) + 1
    assert body["rejected"] == expected
    assert a.store.lines == []
    assert set(metrics) == set(FEATURE_METRICS)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"[]", 400),
        (b"not json", 400),
        (b'{"alerts": [{"count": 1e400}]}', 400),  # infinity: not JSON to orjson
        (b'{"alerts": [{"count": NaN}]}', 400),
        (b'{"alerts": {}}', 400),
        (b'{"alerts": [], "other": []}', 400),
        (orjson.dumps({"features": [{}] * (feed.MAX_ITEMS + 1)}), 400),
        (orjson.dumps({"alerts": [{"subject": "x" * feed.MAX_BODY_BYTES}]}), 413),
    ],
)
async def test_bodies_that_are_not_a_batch_are_refused(body: bytes, status: int) -> None:
    a = make_agent()
    async with TestClient(TestServer(a.app)) as http:
        resp = await http.post(feed.PATH, data=body, headers=AUTH)
        assert resp.status == status
    assert a.store.lines == []


async def test_devices_beyond_the_cap_are_refused_but_alerts_stand() -> None:
    a = make_agent(validation={"max_devices": 1})
    other = DeviceRef("lyon", "gerland", "video", "cam-2")
    async with TestClient(TestServer(a.app)) as http:
        items = [feed.window_item(window()), feed.window_item(window(other))]
        status, body = await post(http, {"features": items})
        assert (status, body["rejected"]) == (200, {"feature:device_cap": 1})
        scan = traffic_alert(kind="telnet_ssh_scan", subject="10.0.0.8", device=other)
        assert (await post(http, {"alerts": [feed.alert_item(scan)]}))[0] == 200
    [alert] = a.pipeline.book.active.values()
    assert alert.device.kind == "_traffic"  # on a bucket, not an invented device


async def test_fed_alerts_resolve_once_quiet_even_without_other_sources() -> None:
    a = make_agent(traffic={"resolve_after_s": 0.5})
    tasks = traffic_tasks(a.config, a.pipeline, a.metrics)
    assert [name for name, _ in tasks] == ["traffic-feed"]
    clock = asyncio.create_task(tasks[0][1])
    try:
        async with TestClient(TestServer(a.app)) as http:
            assert (await post(http, {"alerts": [feed.alert_item(traffic_alert())]}))[0] == 200
            assert len(a.pipeline.book.active) == 1
            deadline = time.monotonic() + 5
            while a.pipeline.book.active:
                assert time.monotonic() < deadline, "not resolved"
                await asyncio.sleep(0.1)
    finally:
        clock.cancel()
    assert any("state=resolved" in line for line in a.store.lines)


async def test_one_bridge_for_the_feed_and_the_agents_own_sources(tmp_path: Any) -> None:
    a = make_agent(traffic={"broker_log_file": str(tmp_path / "log")})
    tasks = traffic_tasks(a.config, a.pipeline, a.metrics)
    assert [name for name, _ in tasks] == ["traffic-feed", "traffic-broker-log"]
    for _, coro in tasks:
        coro.close()
    assert TrafficSources.fed_sources(a.pipeline, a.metrics) is a.sources


# --- the capture's sender ----------------------------------------------------------------------


def client_config(port: int, token: str = TOKEN) -> Config:
    return Config(http={"listen": f"127.0.0.1:{port}", "token": token})


async def test_sender_packs_bodies_to_fit_and_delivers_everything() -> None:
    a = make_agent()
    port = free_port()
    sender = AgentFeed(agent_post(client_config(port)))
    for i in range(300):
        sender.on_alert(traffic_alert(subject=f"user-{i}-" + "é" * 200), True)
    for i in range(200):
        sender.on_features(window(DeviceRef("lyon", "z", "video", f"cam-{i}")))
    async with TestServer(a.app, port=port):
        assert await sender.send_pending()
    s = sender.stats
    assert (s.alerts, s.features, s.failed, s.dropped, s.oversized) == (300, 200, 0, 0, 0)
    assert s.batches >= 1 + (300 * 400 + 200 * 300) // feed.MAX_BODY_BYTES  # several bodies
    assert len([x for x in a.store.lines if x.startswith("video,")]) == 200
    fed = a.metrics.registry.get_sample_value(
        "sentinel_traffic_feed_items_total", {"item": "alert", "result": "accepted"}
    )
    assert fed == 300


async def test_sender_keeps_batches_while_the_agent_is_away_and_drops_the_oldest() -> None:
    a = make_agent()
    port = free_port()  # nothing listens there yet
    sender = AgentFeed(agent_post(client_config(port)), max_pending=50)
    first = traffic_alert(subject="first")
    sender.on_alert(first, True)
    assert not await sender.send_pending()
    assert (sender.stats.failed, sender.pending) == (1, 1)
    sender.on_alert(first, False)  # hit again while waiting: still one item
    t0 = int(time.time()) - 100
    for i in range(60):
        sender.on_features(window(end=t0 + i))
    assert not await sender.send_pending()
    assert (sender.stats.failed, sender.stats.dropped, sender.pending) == (2, 10, 51)
    async with TestServer(a.app, port=port):
        assert await sender.send_pending()
    assert (sender.stats.alerts, sender.stats.features, sender.pending) == (1, 50, 0)
    stored = [line for line in a.store.lines if line.startswith("video,")]
    assert len(stored) == 50
    kept = sorted(int(line.rsplit(" ", 1)[1]) for line in stored)  # ms
    assert kept == [(t0 + i) * 1000 for i in range(10, 60)]  # the 10 oldest were dropped


async def test_sender_drops_a_refused_batch_and_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    a = make_agent()
    port = free_port()
    sender = AgentFeed(agent_post(client_config(port, token="wrong")))
    sender.on_alert(traffic_alert(), True)
    async with TestServer(a.app, port=port):
        assert not await sender.send_pending()
    assert (sender.stats.refused, sender.stats.batches, sender.pending) == (1, 0, 0)
    assert "the agent refused (401)" in capsys.readouterr().err
    assert not a.pipeline.book.active


async def test_sender_sends_soon_after_an_alert_opens() -> None:
    a = make_agent()
    port = free_port()
    sender = AgentFeed(agent_post(client_config(port)), interval_s=30)
    async with TestServer(a.app, port=port):
        task = asyncio.create_task(sender.run())
        try:
            await asyncio.sleep(0.1)
            sender.on_alert(traffic_alert(), True)  # opened: no 30 s wait
            deadline = time.monotonic() + 5
            while not a.pipeline.book.active:
                assert time.monotonic() < deadline, "not sent"
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
    assert sender.stats.batches == 1
