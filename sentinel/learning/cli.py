"""The `sentinel train` command (registered in sentinel.cli).

Only typer and the standard library at import time, so that `sentinel --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def train(
    config: Annotated[
        Path,
        typer.Option(
            "--config", "-c", help="Agent configuration (TOML).", envvar="SENTINEL_CONFIG"
        ),
    ] = Path("deploy/sentinel.toml"),
    detector: Annotated[str, typer.Option(help="Name of a detector of type 'learned'.")] = "",
    since: Annotated[
        str, typer.Option(help="Start: a duration ago (7d, 36h) or an ISO date-time.")
    ] = "7d",
    until: Annotated[str, typer.Option(help="End: now, a duration ago, or an ISO date-time.")] = (
        "now"
    ),
    out: Annotated[
        Path | None, typer.Option(help="Model folder (default: the detector's model_dir).")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's history.")] = None,
    zone: Annotated[str | None, typer.Option(help="Only this zone's history.")] = None,
    window: Annotated[
        str, typer.Option(help="Query InfluxDB this much time at a time (e.g. 1h, 15m).")
    ] = "1h",
    chunk_size: Annotated[
        int, typer.Option(min=100, max=100_000, help="Rows per streamed InfluxDB chunk.")
    ] = 5000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the model's metadata.")] = False,
) -> None:
    """Train a new version of a learned detector's model from InfluxDB history (InfluxQL),
    calibrated to its false-alert budget; agents pick it up at their next model check."""
    import asyncio  # noqa: PLC0415 - keep `sentinel --help` fast
    import json  # noqa: PLC0415
    import time  # noqa: PLC0415
    from datetime import UTC  # noqa: PLC0415

    from sentinel import logs  # noqa: PLC0415
    from sentinel.backtest import parse_when  # noqa: PLC0415
    from sentinel.backtest_source import BacktestError  # noqa: PLC0415
    from sentinel.config import load_config  # noqa: PLC0415
    from sentinel.errors import ConfigError  # noqa: PLC0415
    from sentinel.learning.train import TrainRequest, run_train, summary  # noqa: PLC0415
    from simulators.scenario import parse_duration  # noqa: PLC0415

    logs.configure("warning", json_format=False)
    if not detector:
        typer.echo("sentinel train: --detector NAME is required", err=True)
        raise typer.Exit(2)
    try:
        cfg = load_config(config)
        now = time.time()
        try:
            window_s = parse_duration(window)
        except ValueError as exc:
            raise BacktestError(f"--window: {exc}") from None
        req = TrainRequest(
            config=cfg,
            detector=detector,
            since=parse_when(since, now, UTC, "--since"),
            until=parse_when(until, now, UTC, "--until"),
            out=out,
            tenant=tenant,
            zone=zone,
            query_window_s=window_s,
            chunk_size=chunk_size,
        )
        result = asyncio.run(run_train(req))
    except (ConfigError, BacktestError) as exc:
        typer.echo(f"sentinel train: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({"path": str(result.path), **result.meta}, indent=2))
    else:
        typer.echo(summary(result))
