"""Analyst feedback on alerts and incidents, and the suggestions it leads to.

A false-positive or benign verdict suggests a change an operator may accept:
- `suppress`: mute this detector on this device (or, for an incident, in this zone) for
  `expiry_days`; accepting it creates the suppression, with the accepter as author;
- `threshold`: for a threshold rule, the value that would not have fired (the peak seen, with
  a margin); accepting it records the decision, and the operator applies the printed TOML
  change with a reload, so the config file stays the one source of detector settings.
Suggestions expire unanswered after `expiry_days`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sentinel.alerting.alerts import Alert
from sentinel.alerting.incidents import Incident

FeedbackVerdict = Literal["tp", "fp", "benign"]
VERDICTS: tuple[FeedbackVerdict, ...] = ("tp", "fp", "benign")
SuggestionState = Literal["pending", "accepted", "rejected", "expired"]
_MARGIN = 1.05


@dataclass(frozen=True, slots=True)
class Feedback:
    target: str  # alert fingerprint or incident id
    verdict: FeedbackVerdict
    author: str
    note: str
    ts: float
    detector: str
    tenant: str
    zone: str
    # A true positive on an alert whose detector had adopted a new level: what was undone.
    undone: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Suggestion:
    id: str
    kind: Literal["suppress", "threshold"]
    detector: str
    matchers: dict[str, str]
    detail: str
    created_at: float
    expires_at: float
    from_target: str
    proposed: dict[str, float | str] = field(default_factory=dict)
    state: SuggestionState = "pending"
    decided_by: str = ""
    decided_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Suggestion:
        return cls(**data)


def _suggestion_id(*parts: str) -> str:
    return "g-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]


def _threshold_proposal(alert: Alert) -> dict[str, float | str] | None:
    ev = alert.evidence
    op, peak = ev.get("op"), ev.get("peak", ev.get("value"))
    if alert.source.detector_type != "threshold" or not isinstance(peak, int | float):
        return None
    if "peer_value" in ev:
        # A peer rule's line is peer_factor x the peers' quantile: move the factor.
        line = ev["peer_value"]
        if op in (">", ">=") and isinstance(line, int | float) and line > 0:
            return {"param": "peer_factor", "value": round(float(peak) / line * _MARGIN, 6)}
        return None
    if op in (">", ">="):
        return {"param": "value", "value": round(float(peak) * _MARGIN, 6)}
    if op in ("<", "<="):
        return {"param": "value", "value": round(float(peak) / _MARGIN, 6)}
    return None


def suggestions_for_alert(
    alert: Alert, fb: Feedback, now: float, expiry_days: float
) -> list[Suggestion]:
    if fb.verdict == "tp":
        return []
    d, name = alert.device, alert.source.name
    expires = now + expiry_days * 86400
    out = [
        Suggestion(
            id=_suggestion_id("suppress", name, d.device_id, f"{now:.3f}"),
            kind="suppress",
            detector=name,
            matchers={"detector": name, "device_id": d.device_id},
            detail=f"mute {name} on {d.device_id} for {expiry_days:g} days ({fb.verdict}:"
            f" {fb.note[:200]})",
            created_at=now,
            expires_at=expires,
            from_target=fb.target,
        )
    ]
    proposal = _threshold_proposal(alert)
    if proposal is not None:
        out.append(
            Suggestion(
                id=_suggestion_id("threshold", name, f"{now:.3f}"),
                kind="threshold",
                detector=name,
                matchers={"detector": name},
                detail=f"set [detectors.params] {proposal['param']} ="
                f" {proposal['value']:g} for {name}"
                f" (it fired at {alert.evidence.get('peak', alert.evidence.get('value'))})",
                created_at=now,
                expires_at=expires,
                from_target=fb.target,
                proposed=proposal,
            )
        )
    return out


def suggestions_for_incident(
    incident: Incident, fb: Feedback, now: float, expiry_days: float
) -> list[Suggestion]:
    if fb.verdict == "tp":
        return []
    return [
        Suggestion(
            id=_suggestion_id("suppress", incident.id, name, f"{now:.3f}"),
            kind="suppress",
            detector=name,
            matchers={"detector": name, "tenant": incident.tenant, "zone": incident.zone},
            detail=f"mute {name} in {incident.tenant}/{incident.zone} for"
            f" {expiry_days:g} days ({fb.verdict}: {fb.note[:200]})",
            created_at=now,
            expires_at=now + expiry_days * 86400,
            from_target=fb.target,
        )
        for name in sorted(incident.detectors)
    ]
