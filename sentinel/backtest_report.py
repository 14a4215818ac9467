"""What `sentinel backtest` prints: rich tables for people (JSON comes from `to_dict`).

Device ids and tenants come from the database: every cell is a `Text`, never markup.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sentinel.backtest import BacktestResult, LaneResult, zone_info
from sentinel.backtest_compare import FiredAlert

LIST_LIMIT = 20

Clock = Callable[[float | None], str]  # a time as shown, in the chosen time zone


def _row(*cells: object) -> list[Text]:
    return [c if isinstance(c, Text) else Text(str(c)) for c in cells]


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def print_report(console: Console, result: BacktestResult) -> None:
    tz = zone_info(result.tz_name)

    def when(ts: float | None) -> str:
        return "firing" if ts is None else datetime.fromtimestamp(ts, tz).strftime("%m-%d %H:%M")

    src, read = result.source, result.read
    span = (result.until - result.since) / 86_400.0
    console.print(
        Text(
            f"Backtest {datetime.fromtimestamp(result.since, UTC):%Y-%m-%d %H:%M} → "
            f"{datetime.fromtimestamp(result.until, UTC):%Y-%m-%d %H:%M} UTC ({span:.2f} days), "
            f"{src.describe()}"
        )
    )
    skipped = ", ".join(f"{k} {v:,}" for k, v in sorted(read.skipped.items())) or "none"
    console.print(
        Text(
            f"Read {read.rows:,} rows in {read.queries:,} queries: {result.records:,} records "
            f"from {result.devices:,} devices in {result.wall_s:.1f} s; skipped rows: {skipped}"
        )
    )
    for lane in result.lanes:
        _per_day(console, result, lane)
    _comparison(console, result, when)
    if result.truth_label is not None:
        _truth(console, result)


def _per_day(console: Console, result: BacktestResult, lane: LaneResult) -> None:
    """One row per detector, one column per day (MM-DD in the chosen time zone)."""
    counts = result.per_day(lane)
    detectors = sorted({*lane.detectors, *(a.detector for a in lane.alerts)})
    table = Table(
        title=f"Alerts per day ({result.tz_name}): {lane.label} ({lane.path})",
        title_justify="left",
    )
    table.add_column("detector")
    for day in counts:
        table.add_column(day[5:], justify="right")
    table.add_column("total", justify="right")
    for name in detectors:
        per = [c.get(name, 0) for c in counts.values()]
        table.add_row(*_row(Text(name), *per, sum(per)))
    table.add_section()
    per = [sum(c.values()) for c in counts.values()]
    table.add_row(*_row("all", *per, sum(per)))
    console.print(table)
    if lane.refused:
        console.print(Text(f"  {lane.refused:,} records beyond validation.max_devices ignored"))


def _comparison(console: Console, result: BacktestResult, when: Clock) -> None:
    cmp = result.comparison
    table = Table(
        title=(
            "New vs baseline (an alert matches: same detector and device, spans overlapping "
            f"within {cmp.tolerance_s:g} s)"
        ),
        title_justify="left",
    )
    for col in ("detector", "new", "baseline", "matched", "gained", "lost"):
        table.add_column(col, justify="left" if col == "detector" else "right")
    for name, d in sorted(cmp.by_detector.items()):
        table.add_row(*_row(Text(name), d.new, d.baseline, d.matched, d.gained, d.lost))
    table.add_section()
    table.add_row(
        *_row(
            "all",
            len(result.new.alerts),
            len(result.baseline.alerts),
            len(cmp.matched),
            len(cmp.gained),
            len(cmp.lost),
        )
    )
    console.print(table)
    for title, alerts in (("Gained", cmp.gained), ("Lost", cmp.lost)):
        if alerts:
            _alert_list(console, title, alerts, when)


def _alert_list(console: Console, title: str, alerts: list[FiredAlert], when: Clock) -> None:
    shown = alerts[:LIST_LIMIT]
    more = f", the first {LIST_LIMIT} (--json lists all)" if len(alerts) > LIST_LIMIT else ""
    table = Table(title=f"{title}: {len(alerts):,} alert(s){more}", title_justify="left")
    for col in ("detector", "tenant/zone", "device", "start", "end"):
        table.add_column(col)
    for a in shown:
        d = a.device
        table.add_row(
            *_row(
                Text(a.detector),
                Text(f"{d.tenant}/{d.zone}"),
                Text(d.device_id),
                when(a.start),
                when(a.end),
            )
        )
    console.print(table)


def _truth(console: Console, result: BacktestResult) -> None:
    events = result.truth_events
    table = Table(
        title=(
            f"Against the ground truth of {result.truth_label}: {len(events)} of "
            f"{result.truth_total} event(s) in the window (grace {result.grace_s:g} s)"
        ),
        title_justify="left",
    )
    cols = ("config", "attacks", "detected", "recall", "alerts", "true", "false", "precision")
    for col in cols:
        table.add_column(col, justify="left" if col == "config" else "right")
    for lane in result.lanes:
        s = lane.score
        if s is None:
            continue
        table.add_row(
            *_row(
                lane.label,
                s.attacks,
                s.detected,
                _num(s.recall),
                s.alerts,
                s.true_alerts,
                s.false_alerts,
                _num(s.precision),
            )
        )
    console.print(table)
