"""Sentinel's Grafana dashboards (grafana/), without Grafana (it cannot run on these machines).

Static checks: the JSON files are what grafana/build_dashboards.py builds, parse, have unique
uids and panel ids, use only provisioned data sources, and define each template variable before
anything uses it.

Against the real stack (``stack``): one short simulated run of a fleet with its own tenant
goes through the real broker and a real agent (writing to the database Grafana reads, serving
the /metrics port Prometheus scrapes). Then every variable query, annotation query and panel
query, with the template variables set to this run's tenant, zone, kind, device and detectors and
the time range set to the run, runs as Grafana would send it (InfluxQL as the read-only Grafana
user, PromQL over the run's time range) and must return data.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sentinel.demo import junk_payloads
from simulators.anomalies import AnomalySpec
from simulators.fleet import Device, Fleet, build_fleet
from simulators.generator import generate
from simulators.inventory import write_inventory
from simulators.publisher import publish
from tests.conftest import Stack, agent_config, running_agent
from tests.mqtt_util import client_as
from tests.stack_env import REPO_ROOT, require_stack, secret

GRAFANA = REPO_ROOT / "grafana"
BOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
VARIABLES = ("tenant", "zone", "kind", "device")
# Grafana's own variables and macros, and the alias patterns of the InfluxDB data source.
BUILTINS = {
    "timeFilter",
    "__interval",
    "__interval_ms",
    "__rate_interval",
    "__range",
    "__range_s",
    "col",
    "measurement",
}
# $__rate_interval in the checks: above Grafana's max(interval + scrape, 4 scrapes) = 12 s here.
RATE_WINDOW_S = 20
VAR_REF = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))|\[\[(\w+)\]\]")


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return board


def panels_of(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    stack = list(board.get("panels", []))
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        yield panel


@dataclass(frozen=True)
class Query:
    """One query Grafana sends: a panel target, a variable or an annotation."""

    board: str
    where: str
    source: dict[str, str]
    text: str
    instant: bool = False

    @property
    def id(self) -> str:
        return f"{self.board}:{self.where}"


def queries() -> list[Query]:
    found = []
    for path in BOARDS:
        board = load(path)
        name = path.stem
        for var in board["templating"]["list"]:
            if var.get("type") == "query":
                found.append(Query(name, f"var-{var['name']}", var["datasource"], var["query"]))
        for note in board["annotations"]["list"]:
            if "query" in note:
                found.append(
                    Query(name, f"annotation-{note['name']}", note["datasource"], note["query"])
                )
        for panel in panels_of(board):
            for target in panel.get("targets", []):
                text = target.get("expr") or target.get("query") or ""
                where = f"{panel['id']}-{target['refId']} {panel['title']}"
                found.append(
                    Query(name, where, target["datasource"], text, bool(target.get("instant")))
                )
    return found


def references(text: str) -> set[str]:
    return {next(g for g in m.groups() if g) for m in VAR_REF.finditer(text)}


# --- static checks ------------------------------------------------------------------------------


def test_dashboards_are_what_the_generator_builds() -> None:
    proc = subprocess.run(
        [sys.executable, str(GRAFANA / "build_dashboards.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_four_dashboards_exist_with_unique_uids_and_panel_ids() -> None:
    boards = {path.name: load(path) for path in BOARDS}
    uids = [b["uid"] for b in boards.values()]
    assert len(uids) == len(set(uids)), uids
    assert {"sentinel-soc", "sentinel-device", "sentinel-tuning", "sentinel-pipeline"} <= set(uids)
    for name, board in boards.items():
        ids = [p["id"] for p in panels_of(board)]
        assert ids, name
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        assert all(isinstance(i, int) for i in ids), name


def provisioned() -> dict[str, str]:
    text = (GRAFANA / "provisioning" / "datasources" / "sentinel.yml").read_text(encoding="utf-8")
    return {ds["uid"]: ds["type"] for ds in yaml.safe_load(text)["datasources"]}


def datasource_refs(node: object) -> Iterator[dict[str, str]]:
    """Every {"type", "uid"} object under a "datasource" key, anywhere in a dashboard."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, dict):
                yield value
            else:
                yield from datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_refs(item)


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.stem)
def test_only_provisioned_datasources(path: Path) -> None:
    known = provisioned()
    refs = list(datasource_refs(load(path)))
    assert refs
    for ref in refs:
        if ref == {"type": "grafana", "uid": "-- Grafana --"}:
            continue  # the built-in annotations
        assert ref.get("uid") in known, f"{path.name}: unknown data source {ref}"
        assert ref["type"] == known[ref["uid"]], f"{path.name}: {ref}"


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.stem)
def test_variables_are_defined_before_use(path: Path) -> None:
    board = load(path)
    defined: list[str] = []
    for var in board["templating"]["list"]:
        used = references(var.get("query", ""))
        assert used <= set(defined), f"{var['name']} uses {used - set(defined)} before definition"
        defined.append(var["name"])
    assert list(VARIABLES) == defined[: len(VARIABLES)], defined
    for q in queries():
        if q.board == path.stem and not q.where.startswith("var-"):
            unknown = references(q.text) - set(defined) - BUILTINS
            assert not unknown, f"{q.id}: undefined {unknown}"


# --- one simulated run through the real agent -------------------------------------------------


@dataclass
class Run:
    stack: Stack
    values: dict[str, list[str]]
    start_ms: int
    agent_started: float
    agent_url: str
    # Steps of the run that failed (e.g. an API not there yet): their panels then lack data.
    problems: list[str]


def own_fleet(tenant: str, devices: int, seed: int) -> Fleet:
    """The simulated Lyon fleet, renamed into this test's tenant (others share the database)."""
    fleet = build_fleet(devices, seed)
    return Fleet(
        tuple(
            dataclasses.replace(d, tenant=tenant, device_id=f"{tenant}-{d.device_id}")
            for d in fleet
        )
    )


def api(run_url: str, token: str, method: str, path: str, body: object = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        run_url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def mark_false_positive(agent_url: str, token: str, device: Device, detector: str) -> None:
    """An analyst marks the incident of `device`'s `detector` alert a false positive."""
    incidents = api(agent_url, token, "GET", "/api/incidents?state=all")["incidents"]
    mine = [
        i
        for i in incidents
        if (i["tenant"], i["zone"], i["group"]) == (device.tenant, device.zone, detector)
    ]
    assert mine, f"no {detector} incident in {device.tenant}/{device.zone}"
    note = {"target": mine[0]["id"], "verdict": "fp", "author": "test-grafana", "note": "drill"}
    api(agent_url, token, "POST", "/api/feedback", note)


async def send_junk(stack: Stack, root: str, count: int) -> None:
    """What a misbehaving client sends (the demo's): rejects by reason, dead letters."""
    async with client_as(
        stack.mqtt_url, "sim", identifier=f"junk-{uuid.uuid4().hex[:8]}"
    ) as client:
        for topic, payload in itertools.islice(junk_payloads(root, time.time()), count):
            await client.publish(topic, payload, qos=1)


async def simulated_run(stack: Stack, tmp: Path, ready: Future[Run], stop: asyncio.Event) -> None:
    tenant = f"g{uuid.uuid4().hex[:8]}"
    suffix = tenant[1:7]
    root = f"fleet/test-{tenant}"
    fleet = own_fleet(tenant, 60, seed=11)
    cameras = fleet.of_kind("video")
    # Two cameras of one zone surge together: one incident; beyond the first device it is
    # notified as a roll-up (max_notified_per_incident = 1).
    target, neighbour = next(
        (a, b) for a, b in itertools.combinations(cameras, 2) if a.zone == b.zone
    )
    # Under maintenance: its surge is suppressed, not notified.
    muted: Device = next(c for c in cameras if c.zone != target.zone)
    inventory = tmp / "inventory.json"
    write_inventory(fleet, inventory)
    token = uuid.uuid4().hex
    surge, seasonal, observe = (f"{n}-{suffix}" for n in ("surge", "seasonal", "observe"))
    upload = {"metric": "upload_kbps", "op": ">", "raise_after": 3, "clear_after": 3}
    cfg = agent_config(
        stack,
        stack.env["STACK_INFLUX_DB"],  # the database Grafana's data source reads
        root,
        http_port=stack.agent_port,  # the port Prometheus scrapes
        detectors=[
            {
                "name": surge,
                "type": "threshold",
                "kinds": ["video"],
                "severity": "critical",
                "mitre": "T0882",
                "params": {**upload, "value": 15_000.0},
            },
            {
                "name": seasonal,
                "type": "seasonal",
                "kinds": ["video"],
                "severity": "warning",
                "params": {"metrics": ["upload_kbps"], "warmup": 8},
            },
            {
                "name": observe,
                "type": "threshold",
                "kinds": ["video"],
                "severity": "warning",
                "mode": "observe",
                "params": {**upload, "value": 9_000.0},
            },
        ],
        http={"token": token},
        traffic={"inventory_file": str(inventory), "sys_topics": True},
        alerting={"max_notified_per_incident": 1},
    )
    speed, duration = 30.0, 24.0
    span = speed * duration
    start = time.time() - span
    anomalies = [
        AnomalySpec(device.device_id, start_offset_s=0.3 * span, duration_s=0.4 * span).resolve(
            fleet, start
        )
        for device in (target, neighbour, muted)
    ]
    messages = generate(fleet, start, start + span, anomalies, 11, topic_prefix=root)
    async with running_agent(cfg):
        agent_started = time.time()
        agent_url = f"http://127.0.0.1:{stack.agent_port}"
        await send_junk(stack, root, 12)
        problems = []
        try:
            maintenance = {
                "matchers": {"device_id": muted.device_id},
                # Alerts carry device time: the window covers the simulated span.
                "starts_at": start,
                "ends_at": start + span + 600,
                "kind": "maintenance",
                "author": "test-grafana",
                "reason": "camera replaced",
            }
            await asyncio.to_thread(api, agent_url, token, "POST", "/api/suppressions", maintenance)
        except (OSError, ValueError) as exc:
            problems.append(f"suppression: {exc!r}"[:300])
        await publish(
            messages,
            mqtt_url=stack.mqtt_url,
            username="sentinel-sim",
            password=secret("mqtt-sim"),
            client_id=f"sim-{tenant}",
            speed=speed,
        )
        try:
            await asyncio.to_thread(mark_false_positive, agent_url, token, target, surge)
        except (OSError, AssertionError, KeyError, ValueError) as exc:
            problems.append(f"feedback: {exc!r}"[:300])
        # InfluxDB flush, Prometheus scrapes; and a run long enough that range queries can
        # start one rate window after the agent did (samples of an earlier agent on the same
        # port must not count).
        await asyncio.sleep(max(6.0, agent_started + 2 * RATE_WINDOW_S - time.time()))
        ready.set_result(
            Run(
                stack,
                {
                    "tenant": [tenant],
                    "zone": [target.zone],
                    "kind": [target.kind],
                    "device": [target.device_id],
                    "detector": [surge, seasonal, observe],
                },
                int(start * 1000) - 60_000,
                agent_started,
                agent_url,
                problems,
            )
        )
        await stop.wait()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The agent keeps running (in its own thread and loop) while the module's tests query:
    Prometheus marks an agent's series stale as soon as it stops answering."""
    stack = Stack(require_stack())
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="grafana-run", daemon=True)
    thread.start()
    ready: Future[Run] = Future()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            await simulated_run(stack, tmp_path_factory.mktemp("grafana"), ready, stop)
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    task = asyncio.run_coroutine_threadsafe(main(), loop)
    try:
        yield ready.result(timeout=180)
    finally:
        loop.call_soon_threadsafe(stop.set)
        try:
            task.result(timeout=60)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


# --- what Grafana would send ---------------------------------------------------------------


def grafana_regex(values: list[str], source: str) -> str:
    """A variable's value inside a regex, escaped as Grafana's data source does it (InfluxDB: one
    backslash; Prometheus: two, the regex sits in a PromQL string); several values as (a|b)."""
    if source == "prometheus":
        escaped = [re.sub(r"([$^*+?.()|\\{}\[\]])", r"\\\\\1", v) for v in values]
    else:
        escaped = [re.sub(r"([\\^$*+?.()|\[\]{}/])", r"\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(text: str, source: str, run: Run, now: float) -> str:
    range_s = int(now - run.agent_started) - 1  # only this agent's samples
    macros = {
        "timeFilter": f"time >= {run.start_ms}ms AND time <= {int(now * 1000) + 60_000}ms",
        "__interval": "10s",
        "__interval_ms": "10000",
        "__rate_interval": f"{RATE_WINDOW_S}s",
        "__range": f"{range_s}s",
        "__range_s": str(range_s),
    }

    def one(m: re.Match[str]) -> str:
        name = next(g for g in m.groups() if g)
        if name in macros:
            return macros[name]
        return grafana_regex(run.values[name], source)

    return VAR_REF.sub(one, text)


def http_json(url: str, data: dict[str, str], auth: tuple[str, str] | None = None) -> Any:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    req = urllib.request.Request(url, urllib.parse.urlencode(data).encode(), headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{exc.code}: {exc.read()[:500]!r}") from None


def influx_rows(run: Run, query: str) -> list[list[Any]]:
    env = run.stack.env
    body = http_json(
        f"{env['STACK_INFLUX_URL']}/query",
        {"q": query, "db": env["STACK_INFLUX_DB"], "epoch": "ms"},
        auth=(env["STACK_INFLUX_READER_USER"], secret("influx-grafana")),
    )
    results = body.get("results", [])
    assert results, body
    assert all("error" not in r for r in results), body
    return [v for r in results for s in r.get("series", []) for v in s["values"]]


def prom_result(run: Run, query: Query, expr: str, now: float) -> list[Any]:
    base = run.stack.env["STACK_PROM_URL"]
    if query.instant:
        body = http_json(f"{base}/api/v1/query", {"query": expr, "time": str(now)})
    else:
        body = http_json(
            f"{base}/api/v1/query_range",
            {
                "query": expr,
                "start": str(run.agent_started + RATE_WINDOW_S + 1),
                "end": str(now),
                "step": "2",
            },
        )
    assert body["status"] == "success", body
    result: list[Any] = body["data"]["result"]
    return result


ALL = queries()


@pytest.mark.stack
@pytest.mark.parametrize("query", ALL, ids=[q.id for q in ALL])
def test_query_returns_data_for_the_run(run: Run, query: Query) -> None:
    now = time.time()
    text = substitute(query.text, query.source["type"], run, now)
    if query.source["type"] == "influxdb":
        rows = influx_rows(run, text)
        assert rows, f"no data: {text} (run problems: {run.problems})"
        if query.where.startswith("var-"):
            name = query.where.removeprefix("var-")
            assert set(run.values[name]) & {r[-1] for r in rows}, (name, rows[:20])
    elif query.source["type"] == "prometheus":
        result = prom_result(run, query, text, now)
        assert result, f"no data: {text} (run problems: {run.problems})"
    else:
        pytest.fail(f"no check for data source type {query.source['type']}")


@pytest.mark.stack
def test_metric_names_in_panels_are_exposed_by_the_agent(run: Run) -> None:
    """Counters without samples yet (no error so far) still list their # TYPE."""
    with urllib.request.urlopen(run.agent_url + "/metrics", timeout=10) as resp:
        exposed = set(re.findall(r"^# TYPE (\w+) ", resp.read().decode(), re.M))
    for q in ALL:
        if q.source["type"] != "prometheus":
            continue
        for name in re.findall(r"\b(sentinel_\w+)", q.text):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert {name, base} & exposed or base.removesuffix("_total") in exposed, (q.id, name)
