"""An analysis as JSON lines (for machines) or rich tables (for people)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from sentinel.traffic.analyzer import Analysis
from sentinel.traffic.flows import FlowFeatures


def _line(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()


def json_lines(analysis: Analysis) -> Iterator[str]:
    """One `{"type": "alert", ...}` line per alert, then one `{"type": "summary", ...}`."""
    for alert in analysis.alerts:
        yield _line({"type": "alert", **alert.to_dict()})
    yield _line({"type": "summary", **analysis.summary.to_dict()})


def feature_lines(features: list[FlowFeatures]) -> Iterator[str]:
    for f in features:
        d = f.device
        yield _line(
            {
                "start": f.start,
                "end": f.end,
                "ip": f.ip,
                "device_id": d.device_id if d else None,
                "tenant": d.tenant if d else None,
                "zone": d.zone if d else None,
                "kind": d.kind if d else None,
                **f.metrics(),
                "dns_names": list(f.dns_names),
            }
        )


def _time(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def print_tables(analysis: Analysis, console: Console) -> None:
    alerts = Table(title=f"{len(analysis.alerts)} alerts", show_lines=True)
    alerts.add_column("when (UTC)", no_wrap=True)
    alerts.add_column("kind / severity", no_wrap=True)
    alerts.add_column("subject / source", overflow="fold")
    alerts.add_column("n", justify="right")
    alerts.add_column("evidence", overflow="fold", ratio=1)
    for a in analysis.alerts:
        device = f" ({a.device.device_id})" if a.device else ""
        evidence = "\n".join(f"{k}={v}" for k, v in a.evidence.items() if v is not None)
        alerts.add_row(
            f"{_time(a.first)}\n→ {_time(a.last)[11:]}",
            f"{a.kind}\n{a.severity}",
            f"{a.subject}\n{a.src}{device}",
            str(a.count),
            evidence,
        )
    if analysis.alerts:
        console.print(alerts)
    s = analysis.summary
    summary = Table(title="summary", show_header=False)
    summary.add_column("what")
    summary.add_column("value", overflow="fold")
    rows: list[tuple[str, object]] = [
        ("packets", s.packets),
        ("time span (UTC)", f"{_time(s.first_ts)} .. {_time(s.last_ts)}"),
        ("TCP streams / UDP flows", f"{s.tcp_streams} / {s.flows - s.tcp_streams}"),
        ("MQTT streams", f"{s.mqtt_streams} ({s.mqtt_midstream} picked up mid-stream)"),
        ("MQTT packets", f"{s.mqtt_packets} {_counts(s.mqtt_by_type)}"),
        ("parse errors", f"{s.parse_errors} {_counts(s.parse_errors_by_reason)}"),
        ("hosts / DNS queries", f"{s.hosts} / {s.dns_queries}"),
        ("alerts", f"{s.alerts} {_counts(s.alerts_by_kind)}"),
    ]
    if s.reassembly_gaps or s.mqtt_desynced:
        rows.append(
            ("directions lost", f"{s.reassembly_gaps} on a gap, {s.mqtt_desynced} mid-packet")
        )
    if s.not_ip or s.unsupported_link or s.fragments:
        rows.append(
            (
                "not decoded",
                f"{s.not_ip} not IP, {s.unsupported_link} unsupported link, "
                f"{s.fragments} IP fragments",
            )
        )
    if s.damage:
        rows.append(("capture damaged", s.damage))
    for what, value in rows:
        summary.add_row(what, str(value))
    console.print(summary)


def _counts(counts: dict[str, int]) -> str:
    return "(" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")" if counts else ""
