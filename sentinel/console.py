"""The demo's live console: what arrives, what is refused, what fires."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sentinel.alerting.alerts import Alert


@dataclass
class Snapshot:
    mode: str
    devices: int
    speed: float
    received: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    points_written: int = 0
    sim_ts: float | None = None
    alerts: list[Alert] = field(default_factory=list)


class RateMeter:
    """Messages per second over the last update interval."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None
        self.rate = 0.0

    def update(self, count: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        if self._last is not None and now > self._last[0]:
            self.rate = (count - self._last[1]) / (now - self._last[0])
        self._last = (now, count)
        return self.rate


def _clock(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(snap: Snapshot, rate: float, elapsed_s: float) -> Group:
    head = Table.grid(padding=(0, 2))
    head.add_row("mode", snap.mode, "elapsed", f"{elapsed_s:5.0f} s")
    head.add_row("fleet", f"{snap.devices} devices", "speed", f"{snap.speed:g}× real time")
    head.add_row("simulated time", _clock(snap.sim_ts), "ingest", f"{rate:8.0f} msg/s")
    head.add_row("received", f"{snap.received:,}", "accepted", f"{snap.accepted:,}")
    head.add_row(
        "rejected", f"{sum(snap.rejected.values()):,}", "stored points", f"{snap.points_written:,}"
    )

    rejects = Table(title="rejected, by reason", expand=True)
    rejects.add_column("reason")
    rejects.add_column("count", justify="right")
    for reason, n in snap.rejected.most_common(8):
        rejects.add_row(reason, f"{n:,}")

    alerts = Table(title="alerts", expand=True)
    for col in ("state", "alert", "where", "device", "evidence", "since (device time)"):
        alerts.add_column(col, overflow="fold")
    for a in snap.alerts[-8:]:
        state = Text("FIRING", style="bold red") if a.firing else Text("resolved", style="green")
        where = f"{a.device.tenant}/{a.device.zone}"
        evidence = a.evidence.get("condition", "")
        value = a.evidence.get("peak", a.evidence.get("value"))
        alerts.add_row(
            state,
            a.source.alertname,
            where,
            a.device.device_id,
            f"{evidence} (peak {value})",
            _clock(a.starts_at),
        )
    if not snap.alerts:
        alerts.add_row("—", "none yet", "", "", "", "")
    return Group(Panel(head, title="Sentinel demo"), rejects, alerts)
