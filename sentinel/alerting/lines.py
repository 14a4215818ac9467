"""The alert lifecycle in InfluxDB line protocol (README, "InfluxDB schema").

Tags come from configuration (detector, severity, verdict) or from topic levels validated as
slugs (tenant, zone, kind, device_id); free text (summaries, evidence, notes, authors) goes
into escaped string fields only.
"""

from __future__ import annotations

import math

from sentinel.alerting.alerts import Alert
from sentinel.alerting.feedback import Feedback
from sentinel.alerting.incidents import Incident, IncidentState
from sentinel.engine import ScoreSample
from sentinel.store.lineprotocol import escape_string_field as text


def _ms(ts: float) -> int:
    return round(ts * 1000)


def alert_line(alert: Alert) -> str:
    """One state change of an alert: measurement `alerts`, or `observed` for observe-only."""
    d, s = alert.device, alert.source
    measurement = "observed" if alert.observed else "alerts"
    if alert.firing:
        ts, state = alert.starts_at, alert.state
    else:
        ts, state = alert.ends_at or alert.starts_at, "resolved"
    # device_id is a tag: points of many devices at the same millisecond must not overwrite
    # each other (its cardinality is capped by validation.max_devices, as for telemetry).
    return (
        f"{measurement},tenant={d.tenant},zone={d.zone},kind={d.kind},detector={s.name},"
        f"severity={s.severity},state={state},device_id={d.device_id} "
        f"summary={text(alert.summary)},evidence={text(alert.evidence_json())},"
        f"fingerprint={text(alert.fingerprint)},incident={text(alert.incident)},"
        f"mitre={text(s.mitre)},suppressed_by={text(alert.suppressed_by)} {_ms(ts)}"
    )


def incident_line(incident: Incident, state: IncidentState) -> str:
    ts = incident.closed_at if state == "closed" and incident.closed_at else incident.last_change
    return (
        f"incidents,tenant={incident.tenant},zone={incident.zone},detector={incident.group},"
        f"severity={incident.severity},state={state} incident={text(incident.id)},"
        f"alerts={incident.alerts}i,devices={len(incident.devices)}i,"
        f"zones={len(incident.zones)}i,fleet={text(incident.fleet)},"
        f"summary={text(incident.summary)} {_ms(ts)}"
    )


def feedback_line(fb: Feedback) -> str:
    return (
        f"feedback,tenant={fb.tenant},zone={fb.zone},detector={fb.detector},verdict={fb.verdict}"
        f" target={text(fb.target)},author={text(fb.author)},note={text(fb.note)} {_ms(fb.ts)}"
    )


def score_line(sample: ScoreSample) -> str | None:
    d = sample.device
    values = {
        "score": sample.score,
        "value": sample.value,
        "expected_low": sample.expected_low,
        "expected_high": sample.expected_high,
    }
    # InfluxDB refuses a whole batch over one NaN or infinity: such fields are left out.
    fields = ",".join(f"{k}={v!r}" for k, v in values.items() if math.isfinite(v))
    if not fields:
        return None
    return (
        f"detector_scores,tenant={d.tenant},zone={d.zone},kind={d.kind},"
        f"detector={sample.detector},device_id={d.device_id} {fields} {_ms(sample.ts)}"
    )
