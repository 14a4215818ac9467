"""`sentinel demo`: a simulated district of Lyon under attack, the agent, alerts you can see.

With the local stack (root + apt, or already installed) everything is real: the simulator
publishes to Mosquitto, the agent stores in InfluxDB, alerts go to Alertmanager, Prometheus
scrapes the agent. Without it, the same pipeline runs in one process and the demo says what
it skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiomqtt
import orjson
from rich.console import Console
from rich.live import Live

from sentinel import logs
from sentinel.agent import Agent, build_decoder
from sentinel.alerting.alerts import AlertBook
from sentinel.alerting.build import build_book
from sentinel.config import Config, load_config
from sentinel.console import RateMeter, Snapshot, render
from sentinel.deadletter import DeadLetters
from sentinel.engine import Engine, build_instances
from sentinel.metrics import Metrics
from sentinel.pipeline import Pipeline
from sentinel.store.memory import MemoryStore
from simulators.anomalies import AnomalySpec, GroundTruth
from simulators.fleet import build_fleet
from simulators.generator import generate
from simulators.runner import SimulationConfig, run_simulation

REPO = Path(__file__).resolve().parents[1]
STACK_SCRIPT = REPO / "deploy" / "local" / "stack"


@dataclass(frozen=True)
class DemoOptions:
    devices: int = 300
    seed: int = 7
    speed: float = 20.0
    duration_s: float = 60.0
    config: Path = REPO / "deploy" / "sentinel.toml"
    use_stack: bool = True

    @property
    def span_s(self) -> float:
        return self.duration_s * self.speed

    def anomalies(self) -> tuple[AnomalySpec, ...]:
        """Two cameras exfiltrate. The first stops before the end, so its alert is seen to fire
        and resolve; the second is still at it when the demo ends, so Alertmanager shows it."""
        cameras = build_fleet(self.devices, self.seed).of_kind("video")
        span = self.span_s
        first = AnomalySpec(cameras[0].device_id, start_offset_s=0.2 * span, duration_s=0.35 * span)
        if len(cameras) < 2:
            return (first,)
        second = AnomalySpec(cameras[-1].device_id, start_offset_s=0.7 * span, duration_s=span)
        return (first, second)


def junk_payloads(topic_root: str, now: float) -> Iterator[tuple[str, bytes]]:
    """What a misbehaving or hostile client sends: every message must be refused and counted."""
    cam = f"{topic_root}/lyon/part-dieu/video/lyon-cam-99999/telemetry"
    while True:
        yield cam, b"\x00\x01 binary garbage"
        yield cam, b'{"ts": %f, "metrics": {"upload_kbps": NaN}}' % now
        yield cam, orjson.dumps({"ts": now, "metrics": {"upload_kbps": "a lot"}})
        yield cam, orjson.dumps({"ts": now + 86_400, "metrics": {"upload_kbps": 1.0}})
        yield f"{topic_root}/lyon/part-dieu/drone/d-1/telemetry", orjson.dumps({"ts": now})
        yield cam, b"{" + b" " * 8000 + b"}"


def bring_up_stack(console: Console) -> tuple[dict[str, str] | None, str]:
    """Run `deploy/local/stack up`; return its stack.env, or None and why not."""
    if not STACK_SCRIPT.exists():
        return None, f"{STACK_SCRIPT} is missing"
    with console.status("Bringing up Mosquitto, InfluxDB, Prometheus and Alertmanager…"):
        try:
            proc = subprocess.run(
                [str(STACK_SCRIPT), "up"], capture_output=True, text=True, timeout=900, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"stack up failed: {exc}"
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-3:]
        return None, "stack up failed: " + " / ".join(last)
    env_proc = subprocess.run(
        [str(STACK_SCRIPT), "env"], capture_output=True, text=True, timeout=60, check=False
    )
    env = dict(line.split("=", 1) for line in env_proc.stdout.splitlines() if "=" in line)
    return env, "local stack is up"


def stack_config(base: Config, env: dict[str, str]) -> Config:
    secrets = Path(env["STACK_SECRETS_DIR"])
    mqtt = base.mqtt.model_copy(
        update={
            "url": env["STACK_MQTT_URL"],
            "client_id": "sentinel-demo",
            "clean_session": True,  # a demo starts fresh, without what an older run left queued
            "password_file": secrets / "mqtt-agent.password",
        }
    )
    influx = base.influxdb.model_copy(
        update={"url": env["STACK_INFLUX_URL"], "password_file": secrets / "influx-agent.password"}
    )
    am = base.alertmanager.model_copy(update={"url": env["STACK_AM_URL"]})
    http = base.http.model_copy(update={"listen": f"127.0.0.1:{env['STACK_AGENT_PORT']}"})
    return base.model_copy(
        update={"mqtt": mqtt, "influxdb": influx, "alertmanager": am, "http": http}
    )


async def _hostile_client(cfg: Config, env: dict[str, str], every_s: float) -> None:
    password = (Path(env["STACK_SECRETS_DIR"]) / "mqtt-sim.password").read_text().strip()
    root = cfg.mqtt.telemetry_topic.split("/{", 1)[0]
    async with aiomqtt.Client(
        cfg.mqtt.host,
        cfg.mqtt.port,
        username="sentinel-sim",
        password=password,
        identifier="sentinel-demo-hostile",
    ) as client:
        for topic, payload in junk_payloads(root, time.time()):
            await client.publish(topic, payload, qos=1)
            await asyncio.sleep(every_s)


async def _online(opts: DemoOptions, cfg: Config, env: dict[str, str], console: Console) -> int:
    agent = Agent(cfg, Metrics())
    agent_task = asyncio.create_task(agent.run(), name="demo-agent")
    try:
        await asyncio.wait_for(agent.reader.connected.wait(), 20)
    except TimeoutError:
        console.print("[red]The agent could not subscribe to the broker within 20 s.[/]")
        agent_task.cancel()
        return 1
    demo_dir = Path(env["STACK_DIR"]) / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    sim_password = (Path(env["STACK_SECRETS_DIR"]) / "mqtt-sim.password").read_text().strip()
    sim_cfg = SimulationConfig(
        devices=opts.devices,
        seed=opts.seed,
        speed=opts.speed,
        duration_s=opts.duration_s,
        mqtt_url=env["STACK_MQTT_URL"],
        username="sentinel-sim",
        password=sim_password,
        inventory_path=demo_dir / "inventory.json",
        truth_path=demo_dir / "truth.jsonl",
        anomalies=opts.anomalies(),
        client_id="sentinel-demo-sim",
    )
    snap = Snapshot(
        "real stack: Mosquitto → agent → InfluxDB, Alertmanager, Prometheus",
        opts.devices,
        opts.speed,
    )

    def progress(stats: object) -> None:
        snap.sim_ts = getattr(stats, "sim_ts", None)

    sim_task = asyncio.create_task(run_simulation(sim_cfg, progress), name="demo-simulator")
    hostile = asyncio.create_task(_hostile_client(cfg, env, 0.5), name="demo-hostile-client")
    await _watch(sim_task, snap, agent, console)
    hostile.cancel()
    await asyncio.sleep(2 * cfg.pipeline.batch_interval_s + cfg.influxdb.flush_interval_s)
    agent_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await agent_task
    with contextlib.suppress(asyncio.CancelledError):
        await hostile
    summary = sim_task.result()
    _print_where_to_look(console, cfg, env, summary.ground_truth, agent.book)
    return 0


async def _watch(sim: asyncio.Task[object], snap: Snapshot, agent: Agent, console: Console) -> None:
    meter = RateMeter()
    started = time.monotonic()
    reg = agent.metrics.registry
    with Live(console=console, refresh_per_second=4) as live:
        while True:
            pipeline = agent.pipeline
            if pipeline is not None:
                snap.received = int(
                    reg.get_sample_value("sentinel_messages_received_total", {"source": "mqtt"})
                    or 0
                )
                snap.accepted = pipeline.accepted
                snap.rejected = pipeline.rejected
                snap.points_written = int(
                    reg.get_sample_value("sentinel_influx_points_written_total") or 0
                )
                snap.alerts = list(agent.book.history)
            live.update(render(snap, meter.update(snap.received), time.monotonic() - started))
            if sim.done():
                break
            await asyncio.sleep(0.5)


def _print_outcome(console: Console, truth: tuple[GroundTruth, ...], book: AlertBook) -> None:
    console.rule("What happened")
    for t in truth:
        console.print(f"Injected: [bold]{t.kind}[/] on {t.device_id} ({t.tenant}/{t.zone})")
    for a in book.history:
        state = "still firing" if a.firing else "resolved"
        console.print(
            f"Raised:   [bold]{a.source.alertname}[/] on {a.device.device_id} ({state}): "
            f"{a.summary}"
        )
    if not book.history:
        console.print("[yellow]No alert was raised.[/]")
    for incident in book.incidents.by_id.values():
        console.print(
            f"Incident: [bold]{incident.id}[/] {incident.severity}: {incident.summary}"
            f" ({'open' if incident.open else 'closed'})"
        )


def _print_where_to_look(
    console: Console,
    cfg: Config,
    env: dict[str, str],
    truth: tuple[GroundTruth, ...],
    book: AlertBook,
) -> None:
    _print_outcome(console, truth, book)
    device = truth[0].device_id if truth else "lyon-cam-00001"
    query = (
        f"SELECT max(upload_kbps) FROM video WHERE device_id = '{device}' "  # noqa: S608 - an id the simulator made
        "AND time > now() - 2h GROUP BY time(2m) fill(none)"
    )
    secrets = env["STACK_SECRETS_DIR"]
    console.rule("Where to look")
    console.print(
        f"Alertmanager  {env['STACK_AM_URL']}/#/alerts   "
        f"(history: amtool --alertmanager.url={env['STACK_AM_URL']} alert query)"
    )
    console.print(
        f"Prometheus    {env['STACK_PROM_URL']}/graph?g0.expr="
        f"{quote('sentinel_alerts_total')}&g0.tab=0"
    )
    console.print("InfluxDB      the anomaly, minute by minute:")
    console.print(
        f'  INFLUX_USERNAME=sentinel-agent INFLUX_PASSWORD="$(cat {secrets}/'
        f'influx-agent.password)" influx -port {env["STACK_INFLUX_PORT"]} '
        f'-precision rfc3339 -database {cfg.influxdb.database} -execute "{query}"',
        soft_wrap=True,
    )
    console.print("Stop the stack with: deploy/local/stack down")


async def _offline(opts: DemoOptions, cfg: Config, why: str, console: Console) -> int:
    console.print(
        f"[yellow]Running without the real stack ({why}).[/]\n"
        "Skipped: Mosquitto (messages go straight to the pipeline), InfluxDB (points are "
        "only counted), Alertmanager and Prometheus (alerts shown here only)."
    )
    metrics = Metrics()
    book = build_book(cfg, metrics)
    store = MemoryStore()
    pipeline = Pipeline(
        decoder=build_decoder(cfg),
        store=store,
        engine=Engine(build_instances(cfg.detectors)),
        book=book,
        notifiers=[],
        metrics=metrics,
        deadletters=DeadLetters(cfg.deadletter.capacity),
        max_devices=cfg.validation.max_devices,
    )
    fleet = build_fleet(opts.devices, opts.seed)
    start = time.time() - opts.span_s
    anomalies = [spec.resolve(fleet, start) for spec in opts.anomalies()]
    root = cfg.mqtt.telemetry_topic.split("/{", 1)[0]
    junk = junk_payloads(root, time.time())
    snap = Snapshot("in one process (no broker, no database)", opts.devices, opts.speed)
    meter = RateMeter()
    wall0 = time.monotonic()
    batch: list[tuple[str, bytes]] = []
    last_draw = 0.0
    with Live(console=console, refresh_per_second=4) as live:
        messages = generate(fleet, start, start + opts.span_s, anomalies, opts.seed)
        for n, msg in enumerate(messages):
            batch.append((msg.topic, msg.payload))
            if n % 200 == 0:
                batch.append(next(junk))
            due = wall0 + (msg.ts - start) / opts.speed
            if due > time.monotonic() + 0.05 or len(batch) >= cfg.pipeline.batch_max:
                await pipeline.process(batch, time.time())
                batch = []
                snap.sim_ts = msg.ts
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            if time.monotonic() - last_draw > 0.25:
                last_draw = time.monotonic()
                snap.received = int(
                    metrics.registry.get_sample_value(
                        "sentinel_messages_received_total", {"source": "mqtt"}
                    )
                    or 0
                )
                snap.accepted, snap.rejected = pipeline.accepted, pipeline.rejected
                snap.points_written = sum(store.points.values())
                snap.alerts = list(book.history)
                live.update(render(snap, meter.update(snap.received), last_draw - wall0))
        if batch:
            await pipeline.process(batch, time.time())
    _print_outcome(console, tuple(a.truth for a in anomalies), book)
    console.print("With root and apt, `sentinel demo` runs the same thing on the real stack.")
    return 0


def run_demo(opts: DemoOptions, console: Console | None = None) -> int:
    console = console or Console()
    logs.configure("warning", json_format=False)  # the live console is the interface here
    cfg = load_config(opts.config)
    env, why = bring_up_stack(console) if opts.use_stack else (None, "--no-stack was given")
    if env is None:
        return asyncio.run(_offline(opts, cfg, why, console))
    console.print(
        f"[green]{why}[/]: agent metrics on http://127.0.0.1:{env['STACK_AGENT_PORT']}"
        "/metrics while the demo runs."
    )
    return asyncio.run(_online(opts, stack_config(cfg, env), env, console))
