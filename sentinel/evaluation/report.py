"""What `sentinel eval` shows: a rich table, a JSON document, an HTML report with a timeline."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from sentinel.evaluation.runner import RunResult
from sentinel.evaluation.scoring import Score

_TIMELINE_ROWS = 40


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _secs(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f} s" if x < 600 else f"{x / 60:.1f} min"


def document(runs: Sequence[RunResult], score: Score, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "options": options,
        "score": score.to_dict(),
        "runs": [r.to_dict() for r in runs],
    }


def print_report(console: Console, runs: Sequence[RunResult], score: Score) -> None:
    table = Table(title="Attacks (per kind)", title_justify="left")
    for col in ("kind", "events", "detected", "precision", "recall", "F1", "TTD p50", "TTD p95"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for k in sorted(score.kinds.values(), key=lambda k: k.kind):
        d = k.to_dict()
        table.add_row(
            k.kind,
            str(k.events),
            str(k.detected),
            _num(d["precision"]),
            _num(d["recall"]),
            _num(d["f1"]),
            _secs(d["ttd_p50_s"]),
            _secs(d["ttd_p95_s"]),
        )
    table.add_section()
    table.add_row(
        "all attacks",
        str(score.attacks),
        str(score.detected),
        _num(score.precision),
        _num(score.recall),
        _num(score.f1),
        "",
        "",
    )
    console.print(table)

    benign = Table(title="Benign events", title_justify="left")
    for col in ("kind", "events", "device-hours", "false alerts", "per 1,000 device-h"):
        benign.add_column(col, justify="left" if col == "kind" else "right")
    for b in sorted(score.benign.values(), key=lambda b: b.kind):
        benign.add_row(
            b.kind,
            str(b.events),
            f"{b.device_hours:,.0f}",
            str(b.false_alerts),
            _num(b.per_1000_device_hours, "{:.3f}"),
        )
    if score.benign:
        console.print(benign)

    runs_table = Table(title="Runs", title_justify="left")
    for col in (
        "scenario",
        "devices",
        "days",
        "messages",
        "rejected",
        "broker events",
        "alerts",
        "wall",
    ):
        runs_table.add_column(col, justify="left" if col == "scenario" else "right")
    for r in runs:
        runs_table.add_row(
            r.name,
            f"{r.devices:,}",
            f"{r.span_s / 86_400:g}",
            f"{r.messages:,}",
            f"{sum(r.rejected.values()):,}",
            f"{r.broker_events:,}",
            str(len(r.alerts)),
            f"{r.wall_s:.1f} s",
        )
    console.print(runs_table)

    console.print(
        f"Alerts: {score.alerts} ({score.true_alerts} true, {score.false_alerts} false) over "
        f"{score.days:g} simulated days = {_num(score.alerts_per_day)} per day.\n"
        f"False alerts per 1,000 device-hours: {_num(score.fa_traffic_per_1000_dh, '{:.3f}')} on "
        f"benign traffic ({score.device_hours - score.benign_device_hours:,.0f} device-h), "
        f"{_num(score.fa_benign_per_1000_dh, '{:.3f}')} during benign events "
        f"({score.benign_device_hours:,.0f} device-h).\n"
        f"Matching: same device (or, for a traffic alert without one, a device id it names), "
        f"alert start in \\[event start, event end + {score.grace_s:g} s]."
    )
    for r in runs:
        for why in r.skipped:
            console.print(f"[yellow]{r.name}: skipped {why}[/]")


# --- HTML ---------------------------------------------------------------------------------


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _timeline(run: RunResult, grace_s: float) -> str:
    """An SVG: one row per device that an event or an alert concerns; truth windows behind,
    alerts in front, time from the run's start to its end."""
    rows: list[str] = []
    for t in run.truth:
        for d in t.devices:
            if d not in rows and len(t.devices) <= _TIMELINE_ROWS:
                rows.append(d)
    for a in run.alerts:
        if a.device_id not in rows:
            rows.append(a.device_id)
    more = max(len(rows) - _TIMELINE_ROWS, 0)
    rows = rows[:_TIMELINE_ROWS]
    fleet_wide = [t for t in run.truth if len(t.devices) > _TIMELINE_ROWS]
    left, width, row_h, top = 170, 760, 14, 24
    height = top + row_h * (len(rows) + len(fleet_wide)) + 30
    span = max(run.end - run.start, 1.0)

    def x(ts: float) -> float:
        return left + width * min(max((ts - run.start) / span, 0.0), 1.0)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 10}" height="{height}" '
        'font-family="sans-serif" font-size="10">',
        f'<rect x="{left}" y="{top - 4}" width="{width}" height="{height - top - 22}" '
        'fill="#fafafa" stroke="#ddd"/>',
    ]
    for h in range(0, int(span // 3600) + 1, max(int(span // 3600) // 12, 1)):
        xx = x(run.start + h * 3600)
        out.append(
            f'<line x1="{xx:.1f}" y1="{top - 4}" x2="{xx:.1f}" y2="{height - 26}" stroke="#eee"/>'
        )
        out.append(f'<text x="{xx:.1f}" y="{height - 12}" text-anchor="middle">+{h}h</text>')
    index = {d: i for i, d in enumerate(rows)}
    for i, t in enumerate(fleet_wide):
        y = top + row_h * (len(rows) + i)
        out.append(
            f'<text x="{left - 4}" y="{y + 10}" text-anchor="end">'
            f"{html.escape(t.kind)} ({len(t.devices)} devices)</text>"
        )
        colour = "#9ecae1" if t.label == "benign" else "#fc9272"
        out.append(
            f'<rect x="{x(t.start):.1f}" y="{y + 1}" width="{max(x(t.end) - x(t.start), 1):.1f}" '
            f'height="{row_h - 2}" fill="{colour}"><title>{html.escape(t.kind)}</title></rect>'
        )
    for d, i in index.items():
        y = top + row_h * i
        out.append(f'<text x="{left - 4}" y="{y + 10}" text-anchor="end">{html.escape(d)}</text>')
    for t in run.truth:
        colour = "#9ecae1" if t.label == "benign" else "#fc9272"
        for d in t.devices:
            if d in index:
                y = top + row_h * index[d]
                w = max(x(t.end) - x(t.start), 1.0)
                out.append(
                    f'<rect x="{x(t.start):.1f}" y="{y + 1}" width="{w:.1f}" height="{row_h - 2}" '
                    f'fill="{colour}"><title>{html.escape(t.kind)} ({t.label}) '
                    f"{_when(t.start)} to {_when(t.end)}</title></rect>"
                )
                g = max(x(t.end + grace_s) - x(t.end), 0.0)
                out.append(
                    f'<rect x="{x(t.end):.1f}" y="{y + 1}" width="{g:.1f}" '
                    f'height="{row_h - 2}" fill="{colour}" opacity="0.35"/>'
                )
    for a in run.alerts:
        if a.device_id not in index:
            continue
        y = top + row_h * index[a.device_id]
        end = a.end if a.end is not None else run.end
        w = max(x(end) - x(a.start), 2.0)
        out.append(
            f'<rect x="{x(a.start):.1f}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" '
            f'fill="#cb181d"><title>{html.escape(a.detector)}: {html.escape(a.summary)} '
            f"({_when(a.start)})</title></rect>"
        )
    if more:
        out.append(f'<text x="{left}" y="{height - 2}">… {more} more devices not shown</text>')
    out.append("</svg>")
    return "\n".join(out)


def html_report(runs: Sequence[RunResult], score: Score, options: dict[str, Any]) -> str:
    s = score.to_dict()
    kinds = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['events']}</td><td>{v['detected']}</td>"
        f"<td>{_num(v['precision'])}</td><td>{_num(v['recall'])}</td><td>{_num(v['f1'])}</td>"
        f"<td>{_secs(v['ttd_p50_s'])}</td><td>{_secs(v['ttd_p95_s'])}</td></tr>"
        for k, v in s["attacks"].items()
    )
    benign = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['events']}</td><td>{v['device_hours']:,.0f}</td>"
        f"<td>{v['false_alerts']}</td>"
        f"<td>{_num(v['false_alerts_per_1000_device_hours'], '{:.3f}')}</td></tr>"
        for k, v in s["benign_events"].items()
    )
    o = s["overall"]
    sections = "".join(
        f"<h3>{html.escape(r.name)}</h3><p>{r.devices:,} devices, {r.span_s / 86400:g} days "
        f"from {_when(r.start)}, seed {r.seed}: {r.messages:,} messages, {len(r.alerts)} alerts, "
        f"{len(r.truth)} labelled events.</p>{_timeline(r, score.grace_s)}"
        for r in runs
    )
    opts = html.escape(", ".join(f"{k}={v}" for k, v in options.items()))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sentinel eval</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1000px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;
text-align:right}}td:first-child,th:first-child{{text-align:left}}
.legend span{{display:inline-block;width:12px;height:10px;margin:0 4px 0 12px}}</style></head>
<body><h1>Sentinel eval</h1><p>{opts}</p>
<h2>Attacks</h2><table><tr><th>kind</th><th>events</th><th>detected</th><th>precision</th>
<th>recall</th><th>F1</th><th>TTD p50</th><th>TTD p95</th></tr>{kinds}
<tr><th>all attacks</th><th>{o["attacks"]}</th><th>{o["detected"]}</th>
<th>{_num(o["precision"])}</th><th>{_num(o["recall"])}</th><th>{_num(o["f1"])}</th>
<th></th><th></th></tr></table>
<h2>Benign events</h2><table><tr><th>kind</th><th>events</th><th>device-hours</th>
<th>false alerts</th><th>per 1,000 device-h</th></tr>{benign}</table>
<p>{o["alerts"]} alerts ({o["true_alerts"]} true) over {o["simulated_days"]:g} simulated days:
{_num(o["alerts_per_day"])} per day. False alerts per 1,000 device-hours:
{_num(o["false_alerts_per_1000_device_hours_benign_traffic"], "{:.3f}")} on benign traffic,
{_num(o["false_alerts_per_1000_device_hours_benign_events"], "{:.3f}")} during benign events.
An alert matches an event when its device is one of the event's and it starts between the
event's start and {score.grace_s:g} s after its end.</p>
<h2>Timelines</h2><p class="legend"><span style="background:#fc9272"></span>attack
<span style="background:#9ecae1"></span>benign event (lighter: grace period)
<span style="background:#cb181d"></span>alert</p>{sections}
</body></html>
"""
