"""InfluxDB line protocol for Sentinel's schema (see README, "InfluxDB schema").

Tag values (tenant, zone, kind, device id, detector names) are validated upstream against
patterns without spaces, commas, equals signs or quotes, so they need no escaping here.
String fields (alert summaries and evidence, the telemetry's `info`, command names and
senders) are attacker-influenced and are escaped; they are never tags (unbounded series).
"""

from __future__ import annotations

from collections.abc import Iterable

from detectors.model import CommandRecord, Record, StatusRecord


def _ms(ts: float) -> int:
    return round(ts * 1000)


def record_line(record: Record) -> str:
    d = record.device
    # Every metric is a float (no `i` suffix) so that a field never changes type in InfluxDB.
    fields = ",".join(f"{name}={value!r}" for name, value in record.metrics.items())
    if record.seq is not None:
        fields += f",seq={record.seq}i"
    # `info.<key>` cannot collide with a metric name (no dot in those), so no field changes type.
    for key, text in record.info.items():
        fields += f",info.{key}={escape_string_field(text)}"
    series = f"{d.kind},tenant={d.tenant},zone={d.zone},device_id={d.device_id}"
    return f"{series} {fields} {_ms(record.ts)}"


def status_line(status: StatusRecord) -> str:
    d = status.device
    return (
        f"device_status,tenant={d.tenant},zone={d.zone},kind={d.kind},device_id={d.device_id} "
        f"online={int(status.online)}i {_ms(status.ts)}"
    )


def command_line(command: CommandRecord) -> str:
    d = command.device
    fields = f"command={escape_string_field(command.command)}"
    if command.sender is not None:
        fields += f",sender={escape_string_field(command.sender)}"
    for name, value in command.args.items():
        fields += f",args.{name}={value!r}"
    return (
        f"commands,tenant={d.tenant},zone={d.zone},kind={d.kind},device_id={d.device_id} "
        f"{fields} {_ms(command.ts)}"
    )


def escape_string_field(text: str, limit: int = 2048) -> str:
    text = text[:limit].replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + text + '"'


def lines_for(records: Iterable[Record | StatusRecord | CommandRecord]) -> list[str]:
    return [
        record_line(r)
        if isinstance(r, Record)
        else status_line(r)
        if isinstance(r, StatusRecord)
        else command_line(r)
        for r in records
    ]
