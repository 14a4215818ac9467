"""`sentinel pcap ...` (a typer sub-application, mounted by sentinel/cli.py); `sentinel capture`."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console

from sentinel.errors import SentinelError
from sentinel.traffic.config import TrafficConfig

if TYPE_CHECKING:
    from detectors.model import DeviceRef
    from sentinel.traffic.alerts import AlertListener, TrafficAlert
    from sentinel.traffic.analyzer import Analysis, Analyzer
    from sentinel.traffic.capture import LiveSocket
    from sentinel.traffic.feed_client import AgentFeed

app = typer.Typer(
    help="Analyze packet captures: MQTT protocol attacks and per-device flows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _group() -> None:
    """Packet captures (pcap, pcapng)."""  # keeps `analyze` a subcommand when mounted


def _fail(message: str) -> typer.Exit:
    typer.echo(f"sentinel: {message}", err=True)
    return typer.Exit(2)


def load_traffic_config(path: Path) -> TrafficConfig:
    """The `[traffic]` table of a TOML file (the whole file when it has no such table); the
    agent's keys for its live sources (sentinel.config.TrafficSourcesConfig) are accepted."""
    from sentinel.config import TrafficSourcesConfig  # noqa: PLC0415 - keep --help fast

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _fail(f"{path}: {exc}") from None
    try:
        return TrafficSourcesConfig(**data.get("traffic", data))
    except ValidationError as exc:
        problems = "; ".join(
            f"traffic.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        raise _fail(f"{path}: {problems}") from None


# Options shared with `sentinel capture`.
InventoryOption = Annotated[
    Path | None,
    typer.Option("--inventory", "-i", help="Fleet inventory JSON: devices found by IP."),
]
JsonLinesOption = Annotated[
    bool, typer.Option("--json", help="Alerts as JSON lines, then a summary line.")
]
TrafficConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML file whose traffic table sets thresholds (with --agent: the agent's "
        "configuration, default deploy/sentinel.toml).",
    ),
]


@app.command()
def analyze(
    file: Annotated[Path, typer.Argument(help="Capture file (pcap or pcapng).")],
    inventory: InventoryOption = None,
    json_lines: JsonLinesOption = False,
    config: TrafficConfigOption = None,
    features: Annotated[
        Path | None,
        typer.Option("--features", help="Also write per-host window features (JSON lines)."),
    ] = None,
) -> None:
    """Find MQTT protocol attacks and traffic anomalies in a capture. Exit 0 even with alerts."""
    from sentinel.traffic import report  # noqa: PLC0415 - keep `sentinel --help` fast
    from sentinel.traffic.analyzer import analyze_file  # noqa: PLC0415
    from sentinel.traffic.inventory import load_inventory  # noqa: PLC0415

    cfg = load_traffic_config(config) if config else TrafficConfig()
    try:
        devices = load_inventory(inventory) if inventory else None
        analysis = analyze_file(file, cfg, devices, keep_features=features is not None)
    except SentinelError as exc:
        raise _fail(str(exc)) from None
    if features is not None:
        features.write_text(
            "".join(line + "\n" for line in report.feature_lines(analysis.features))
        )
    if json_lines:
        for line in report.json_lines(analysis):
            typer.echo(line)
    else:
        report.print_tables(analysis, Console())


class _LivePrinter:
    """Prints each alert of a live capture as it opens."""

    def __init__(self, json_lines: bool) -> None:
        self.json_lines = json_lines
        self.opened: Counter[str] = Counter()

    def __call__(self, alert: TrafficAlert, is_new: bool) -> None:
        if not is_new:
            return
        self.opened[alert.kind] += 1
        if self.json_lines:
            line = {"type": "alert", **alert.to_dict()}
            typer.echo(orjson.dumps(line, option=orjson.OPT_NON_STR_KEYS).decode())
            return
        device = f" ({alert.device.device_id})" if alert.device else ""
        evidence = " ".join(f"{k}={v}" for k, v in alert.evidence.items() if v is not None)
        when = time.strftime("%H:%M:%S", time.localtime(alert.first))
        typer.echo(
            f"{when}  {alert.severity:<8} {alert.kind:<22} {alert.subject!r} from "
            f"{alert.src}{device}  n={alert.count}  {evidence}"
        )


async def _capture_until_stopped(
    live: LiveSocket, analyzer: Analyzer, duration: float | None, feed: AgentFeed | None
) -> tuple[int, Analysis]:
    """Capture until SIGINT/SIGTERM or `duration`, feeding the agent meanwhile if asked;
    returns the frames the kernel dropped and the analysis."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    drops = 0

    async def tick(_frames: int, dropped: int) -> None:
        nonlocal drops
        drops += dropped

    from sentinel.traffic.capture import pump  # noqa: PLC0415

    tasks = [asyncio.create_task(pump(live, analyzer, tick))]
    if feed is not None:
        tasks.append(asyncio.create_task(feed.run()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), duration)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    live.read(analyzer)  # what arrived meanwhile
    analysis = analyzer.finish()  # the last windows and hits: sent too
    if feed is not None:
        await feed.finish()
    return drops + live.kernel_drops(), analysis


def _agent_feed(
    config: Path | None, inventory: Path | None
) -> tuple[TrafficConfig, dict[bytes, DeviceRef] | None, AgentFeed | None]:
    """`--agent`: thresholds, inventory, token and address from the agent's configuration;
    None for the feed when the agent refuses it (the reason is printed)."""
    from sentinel.config import load_config  # noqa: PLC0415
    from sentinel.operator_cli import DEFAULT_CONFIG, AgentUnreachable  # noqa: PLC0415
    from sentinel.traffic.feed_client import AgentFeed, FeedRefused, agent_post  # noqa: PLC0415
    from sentinel.traffic.live import load_devices  # noqa: PLC0415

    try:
        cfg = load_config(config or DEFAULT_CONFIG)
        path = inventory or cfg.traffic.inventory_file
        devices = load_devices(path, cfg.validation.kinds) if path else None
    except SentinelError as exc:
        raise _fail(str(exc)) from None
    post = agent_post(cfg)
    try:
        post({})  # the address, the token and the endpoint, before capturing
    except FeedRefused:
        return cfg.traffic, devices, None
    except AgentUnreachable as exc:
        typer.echo(f"sentinel: {exc}; capturing anyway, batches wait for it", err=True)
    return cfg.traffic, devices, AgentFeed(post)


def run_capture(
    iface: str,
    bpf: str,
    inventory: Path | None,
    json_lines: bool,
    config: Path | None,
    duration: float | None,
    agent: bool = False,
) -> int:
    """`sentinel capture`: analyze an interface live, print each alert as it opens, and a
    summary at the end (Ctrl-C, SIGTERM or `duration`); with `agent`, also send alert hits
    and flow windows to the running agent. Returns the exit code."""
    from sentinel.traffic import report  # noqa: PLC0415
    from sentinel.traffic.analyzer import Analyzer  # noqa: PLC0415
    from sentinel.traffic.capture import LiveSocket  # noqa: PLC0415
    from sentinel.traffic.inventory import load_inventory  # noqa: PLC0415

    feed: AgentFeed | None = None
    if agent:
        cfg, devices, feed = _agent_feed(config, inventory)
        if feed is None:
            return 1
    else:
        cfg = load_traffic_config(config) if config else TrafficConfig()
        try:
            devices = load_inventory(inventory) if inventory else None
        except SentinelError as exc:
            raise _fail(str(exc)) from None
    try:
        live = LiveSocket(iface, bpf)
    except SentinelError as exc:  # LiveCaptureError: no such interface, no CAP_NET_RAW, ...
        raise _fail(str(exc)) from None
    printer = _LivePrinter(json_lines)
    on_alert = printer if feed is None else _both(printer, feed.on_alert)
    analyzer = Analyzer(
        cfg,
        devices,
        keep_features=False,
        keep_alerts=False,
        on_alert=on_alert,
        on_features=None if feed is None else feed.on_features,
    )
    where = iface + (f" ({bpf})" if bpf else "") + ("; feeding the agent" if feed else "")
    typer.echo(f"capturing on {where}; Ctrl-C stops", err=True)  # stderr: also with --json
    try:
        drops, analysis = asyncio.run(_capture_until_stopped(live, analyzer, duration, feed))
    finally:
        live.close()
    s = analysis.summary
    s.alerts = sum(printer.opened.values())
    s.alerts_by_kind = dict(sorted(printer.opened.items()))
    fed = {} if feed is None else {"feed": feed.stats.to_dict()}
    if json_lines:
        summary = {"type": "summary", **s.to_dict(), "kernel_drops": drops, **fed}
        typer.echo(orjson.dumps(summary, option=orjson.OPT_NON_STR_KEYS).decode())
    else:
        report.print_tables(analysis, Console())
        if drops:
            typer.echo(f"the kernel dropped {drops} frames: the capture fell behind", err=True)
    if feed is not None:
        f = feed.stats
        typer.echo(
            f"fed the agent {f.batches} batches ({f.alerts} alert hits, {f.features} feature "
            f"windows); {f.failed} attempts found no agent, {f.refused} batches refused, "
            f"{f.dropped} items dropped (oldest, too many waiting), {f.unsent} unsent",
            err=True,
        )
    return 0


def _both(first: AlertListener, second: AlertListener) -> AlertListener:
    def call(alert: TrafficAlert, opened: bool) -> None:
        first(alert, opened)
        second(alert, opened)

    return call
