"""A stream of traffic-counter reports for the storage stack tests, and what InfluxDB made of it.

Each report has its own `seq`: "stored once" is then a count of points equal to the number of
distinct `seq` values equal to the number sent.
"""

from __future__ import annotations

import orjson

from tests.conftest import FleetTopics, Stack, influxql, poll_rows, rows


def counter_reports(
    fleet: FleetTopics, tenant: str, zone: str, devices: int, total: int, start_ts: float
) -> list[tuple[str, bytes]]:
    """`total` reports of `devices` counters, 10 ms apart in device time from `start_ts`."""
    prefix = tenant[:3]
    return [
        (
            fleet.telemetry(tenant, zone, "mobility", f"{prefix}-mob-{i % devices:05d}"),
            orjson.dumps({"ts": start_ts + i * 0.01, "seq": i, "metrics": {"vehicles": i % 31}}),
        )
        for i in range(total)
    ]


async def stored_reports(stack: Stack, db: str, total: int) -> tuple[int, int]:
    """Once InfluxDB holds `total` counter points (or 120 s passed): the points and the
    distinct `seq` values it holds."""
    query = 'SELECT count("vehicles") FROM "mobility"'
    stored = await poll_rows(
        stack, db, query, lambda r: bool(r) and r[0]["count"] >= total, within_s=120
    )
    distinct = rows(await influxql(stack, 'SELECT count(distinct("seq")) FROM "mobility"', db))
    return int(stored[0]["count"]), int(distinct[0]["count"])
