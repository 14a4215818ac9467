"""The `sentinel backtest` command (registered in sentinel.cli).

Only typer and the standard library are imported here, so that `sentinel --help` stays fast;
the work is in sentinel.backtest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def backtest(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="The configuration to try (TOML).")
    ],
    baseline: Annotated[
        Path | None,
        typer.Option(
            help="The configuration to compare with. Default: the one the agent runs "
            "($SENTINEL_CONFIG, else deploy/sentinel.toml)."
        ),
    ] = None,
    since: Annotated[
        str, typer.Option(help="Start: a duration ago (7d, 36h, 2h30m) or an ISO date-time.")
    ] = "7d",
    until: Annotated[
        str, typer.Option(help="End: now, a duration ago, or an ISO date-time.")
    ] = "now",
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    zone: Annotated[str | None, typer.Option(help="Only this zone.")] = None,
    truth: Annotated[
        Path | None, typer.Option(help="Ground truth (JSONL, from --truth of scenario run / sim).")
    ] = None,
    scenario: Annotated[
        str | None,
        typer.Option(help="Ground truth of this scenario (library name or TOML file) as run."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="--scenario: its seed.")] = None,
    devices: Annotated[int | None, typer.Option(min=1, help="--scenario: its fleet size.")] = None,
    days: Annotated[float | None, typer.Option(min=0.001, help="--scenario: its days.")] = None,
    start: Annotated[
        str | None, typer.Option(help="--scenario: its start (ISO date-time).")
    ] = None,
    tolerance: Annotated[
        float, typer.Option(min=0, help="Seconds by which two alerts' spans may miss and match.")
    ] = 300.0,
    grace: Annotated[
        float, typer.Option(min=0, help="Grace after a truth event's end, s (as in eval).")
    ] = 300.0,
    tz: Annotated[str, typer.Option(help="Time zone of the days, e.g. Europe/Paris.")] = "UTC",
    window: Annotated[
        str, typer.Option(help="Query InfluxDB this much time at a time (e.g. 6h, 1h).")
    ] = "6h",
    chunk_size: Annotated[
        int, typer.Option(min=100, max=100_000, help="Rows per streamed InfluxDB chunk.")
    ] = 2000,
    max_alerts: Annotated[
        int, typer.Option(min=1, help="Stop when a configuration raises more alerts.")
    ] = 100_000,
    influx_url: Annotated[
        str | None, typer.Option(help="InfluxDB URL (default: the new config's [influxdb]).")
    ] = None,
    database: Annotated[str | None, typer.Option(help="InfluxDB database.")] = None,
    username: Annotated[str | None, typer.Option(help="InfluxDB user.")] = None,
    password_file: Annotated[
        Path | None, typer.Option(help="File holding the InfluxDB password.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON document.")] = False,
) -> None:
    """Try a detector configuration on InfluxDB history, against a baseline: alerts per day,
    alerts gained and lost, and with a ground truth, recall and precision of both."""
    import asyncio  # noqa: PLC0415 - keep `sentinel --help` fast
    import sys  # noqa: PLC0415
    import time  # noqa: PLC0415

    import orjson  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import BarColumn, Progress, TimeElapsedColumn  # noqa: PLC0415

    from sentinel import logs  # noqa: PLC0415
    from sentinel.backtest import (  # noqa: PLC0415
        BacktestError,
        BacktestOptions,
        ScenarioTruth,
        default_baseline,
        parse_when,
        run_backtest,
        zone_info,
    )
    from sentinel.backtest_report import print_report  # noqa: PLC0415
    from simulators.scenario import parse_duration  # noqa: PLC0415

    logs.configure("warning", json_format=False)
    try:
        zinfo = zone_info(tz)
        now = time.time()
        try:
            window_s = parse_duration(window)
        except ValueError as exc:
            raise BacktestError(f"--window: {exc}") from None
        opts = BacktestOptions(
            config=config,
            baseline=baseline or default_baseline(),
            since=parse_when(since, now, zinfo, "--since"),
            until=parse_when(until, now, zinfo, "--until"),
            tz_name=tz,
            tenant=tenant,
            zone=zone,
            truth_file=truth,
            scenario=None
            if scenario is None
            else ScenarioTruth(
                scenario,
                seed,
                devices,
                days,
                None if start is None else parse_when(start, now, zinfo, "--start"),
            ),
            tolerance_s=tolerance,
            grace_s=grace,
            window_s=window_s,
            chunk_size=chunk_size,
            max_alerts=max_alerts,
            influx_url=influx_url,
            database=database,
            username=username,
            password_file=password_file,
        )
        progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        with progress:
            task = progress.add_task("reading InfluxDB", total=1.0)
            result = asyncio.run(run_backtest(opts, lambda f: progress.update(task, completed=f)))
    except BacktestError as exc:
        typer.echo(f"sentinel backtest: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_report(Console(width=None if sys.stdout.isatty() else 160), result)
