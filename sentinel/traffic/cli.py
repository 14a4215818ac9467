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
    from sentinel.traffic.alerts import TrafficAlert
    from sentinel.traffic.analyzer import Analyzer
    from sentinel.traffic.capture import LiveSocket

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
    typer.Option("--config", "-c", help="TOML file whose traffic table sets thresholds."),
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
    live: LiveSocket, analyzer: Analyzer, duration: float | None
) -> int:
    """Capture until SIGINT/SIGTERM or `duration`; returns the frames the kernel dropped."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    drops = 0

    async def tick(_frames: int, dropped: int) -> None:
        nonlocal drops
        drops += dropped

    from sentinel.traffic.capture import pump  # noqa: PLC0415

    task = asyncio.create_task(pump(live, analyzer, tick))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), duration)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    live.read(analyzer)  # what arrived meanwhile
    return drops + live.kernel_drops()


def run_capture(
    iface: str,
    bpf: str,
    inventory: Path | None,
    json_lines: bool,
    config: Path | None,
    duration: float | None,
) -> int:
    """`sentinel capture`: analyze an interface live, print each alert as it opens, and a
    summary at the end (Ctrl-C, SIGTERM or `duration`). Returns the exit code."""
    from sentinel.traffic import report  # noqa: PLC0415
    from sentinel.traffic.analyzer import Analyzer  # noqa: PLC0415
    from sentinel.traffic.capture import LiveSocket  # noqa: PLC0415
    from sentinel.traffic.inventory import load_inventory  # noqa: PLC0415

    cfg = load_traffic_config(config) if config else TrafficConfig()
    try:
        devices = load_inventory(inventory) if inventory else None
        live = LiveSocket(iface, bpf)
    except SentinelError as exc:  # LiveCaptureError: no such interface, no CAP_NET_RAW, ...
        raise _fail(str(exc)) from None
    printer = _LivePrinter(json_lines)
    analyzer = Analyzer(cfg, devices, keep_features=False, keep_alerts=False, on_alert=printer)
    where = iface + (f" ({bpf})" if bpf else "")
    typer.echo(f"capturing on {where}; Ctrl-C stops", err=True)  # stderr: also with --json
    try:
        drops = asyncio.run(_capture_until_stopped(live, analyzer, duration))
    finally:
        live.close()
    analysis = analyzer.finish()
    s = analysis.summary
    s.alerts = sum(printer.opened.values())
    s.alerts_by_kind = dict(sorted(printer.opened.items()))
    if json_lines:
        summary = {"type": "summary", **s.to_dict(), "kernel_drops": drops}
        typer.echo(orjson.dumps(summary, option=orjson.OPT_NON_STR_KEYS).decode())
    else:
        report.print_tables(analysis, Console())
        if drops:
            typer.echo(f"the kernel dropped {drops} frames: the capture fell behind", err=True)
    return 0
