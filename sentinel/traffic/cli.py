"""`sentinel pcap ...`: a typer sub-application (mounted by sentinel/cli.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from sentinel.errors import SentinelError
from sentinel.traffic.config import TrafficConfig

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
    """The `[traffic]` table of a TOML file (the whole file when it has no such table)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _fail(f"{path}: {exc}") from None
    try:
        return TrafficConfig(**data.get("traffic", data))
    except ValidationError as exc:
        problems = "; ".join(
            f"traffic.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        raise _fail(f"{path}: {problems}") from None


@app.command()
def analyze(
    file: Annotated[Path, typer.Argument(help="Capture file (pcap or pcapng).")],
    inventory: Annotated[
        Path | None,
        typer.Option("--inventory", "-i", help="Fleet inventory JSON: devices found by IP."),
    ] = None,
    json_lines: Annotated[
        bool, typer.Option("--json", help="Alerts as JSON lines, then a summary line.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML file whose [traffic] table sets thresholds."),
    ] = None,
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
