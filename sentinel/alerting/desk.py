"""The operator's desk: suppressions, feedback and suggestions, each action audited.

The HTTP API and the CLI (through the API) act here. What the API creates survives restarts
in `[alerting] state_file` (JSON, written atomically); every action is appended to the audit
trail (`[alerting] audit_file`, JSON lines, plus the last entries in memory for /api/audit).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import structlog

from detectors.model import DeviceRef
from sentinel.alerting.alerts import AlertBook
from sentinel.alerting.feedback import (
    VERDICTS,
    Feedback,
    FeedbackVerdict,
    Suggestion,
    suggestions_for_alert,
    suggestions_for_incident,
)
from sentinel.alerting.lines import feedback_line
from sentinel.alerting.suppressions import (
    Suppression,
    SuppressionError,
    SuppressionKind,
    new_suppression,
)
from sentinel.atomicfile import write_atomically
from sentinel.metrics import Metrics

log = structlog.get_logger(__name__)

_MAX_TEXT = 1024
_MAX_SUGGESTIONS = 1000


class DeskError(ValueError):
    """A request the desk refuses; `status` is the HTTP status that fits."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class DeskSettings:
    state_file: Path | None = None
    audit_file: Path | None = None
    max_suppression_days: float = 90.0
    suggestion_expiry_days: float = 30.0


class AuditTrail:
    def __init__(self, path: Path | None, keep: int = 1000) -> None:
        self.path = path
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)

    def add(self, ts: float, actor: str, action: str, **detail: Any) -> None:
        entry = {"ts": ts, "actor": actor, "action": action, **detail}
        self.recent.append(entry)
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with self.path.open("ab") as fh:
                fh.write(orjson.dumps(entry) + b"\n")
        except OSError as exc:
            log.error("audit_write_failed", path=str(self.path), error=exc.strerror)


def _clean(value: object, what: str, required: bool = True) -> str:
    if not isinstance(value, str) or (required and not value.strip()):
        raise DeskError(f"{what}: a non-empty string is required")
    text = value.strip()
    if len(text) > _MAX_TEXT:
        raise DeskError(f"{what}: at most {_MAX_TEXT} characters")
    return text


class OperatorDesk:
    def __init__(self, book: AlertBook, metrics: Metrics, settings: DeskSettings) -> None:
        self.book = book
        self.metrics = metrics
        self.settings = settings
        self.audit = AuditTrail(settings.audit_file)
        self.suggestions: dict[str, Suggestion] = {}
        self.pending_lines: list[str] = []  # for InfluxDB, taken by the pipeline
        # (detector name, device, since) -> what was undone: the agent wires its engine here.
        self.reject_new_normal: Callable[[str, DeviceRef, float], list[str]] | None = None
        self._load()

    # -- suppressions ---------------------------------------------------------------------
    def add_suppression(
        self,
        *,
        matchers: Mapping[str, str],
        starts_at: float,
        ends_at: float,
        author: str,
        reason: str,
        kind: SuppressionKind,
        now: float,
    ) -> Suppression:
        try:
            s = new_suppression(
                matchers=matchers,
                starts_at=starts_at,
                ends_at=ends_at,
                author=author,
                reason=reason,
                kind=kind,
                now=now,
                max_days=self.settings.max_suppression_days,
            )
            self.book.suppressions.add(s)
        except SuppressionError as exc:
            raise DeskError(str(exc)) from None
        self.audit.add(
            now,
            s.author,
            f"{kind}.add",
            id=s.id,
            matchers=s.matchers,
            starts_at=s.starts_at,
            ends_at=s.ends_at,
            reason=s.reason,
        )
        self._save()
        return s

    def remove_suppression(self, suppression_id: str, author: str, now: float) -> Suppression:
        author = _clean(author, "author")
        try:
            s = self.book.suppressions.remove(suppression_id)
        except KeyError:
            raise DeskError(f"no suppression {suppression_id[:64]!r}", status=404) from None
        except SuppressionError as exc:
            raise DeskError(str(exc), status=409) from None
        self.audit.add(now, author, f"{s.kind}.remove", id=s.id)
        self._save()
        return s

    # -- feedback and suggestions ---------------------------------------------------------
    def give_feedback(
        self, target: str, verdict: str, author: str, note: str, now: float
    ) -> tuple[Feedback, list[Suggestion]]:
        target = _clean(target, "target")
        author = _clean(author, "author")
        note = _clean(note, "note", required=False)
        if verdict not in VERDICTS:
            raise DeskError(f"verdict: one of {', '.join(VERDICTS)}")
        v: FeedbackVerdict = verdict
        expiry = self.settings.suggestion_expiry_days
        alert = self.book.find(target)
        incident = self.book.incidents.get(target)
        if alert is not None:
            d = alert.device
            fb = Feedback(target, v, author, note, now, alert.source.name, d.tenant, d.zone)
            made = suggestions_for_alert(alert, fb, now, expiry)
            if v == "tp" and self.reject_new_normal is not None:
                # "This was real": a level its detector adopted since is not a new normal.
                undone = self.reject_new_normal(alert.source.name, d, alert.starts_at)
                fb = replace(fb, undone=tuple(undone))
        elif incident is not None:
            fb = Feedback(
                target, v, author, note, now, incident.group, incident.tenant, incident.zone
            )
            made = suggestions_for_incident(incident, fb, now, expiry)
        else:
            raise DeskError(f"no recent alert or incident {target[:64]!r}", status=404)
        self.metrics.feedback.labels(fb.detector, fb.verdict).inc()
        self.pending_lines.append(feedback_line(fb))
        for s in made:
            self._keep_suggestion(s)
        self.audit.add(
            now,
            author,
            "feedback",
            target=target,
            verdict=v,
            note=note,
            suggestions=[s.id for s in made],
            new_normal_rejected=list(fb.undone),
        )
        self._save()
        return fb, made

    def decide(self, suggestion_id: str, accept: bool, author: str, now: float) -> Suggestion:
        author = _clean(author, "author")
        self.expire(now)
        s = self.suggestions.get(suggestion_id)
        if s is None:
            raise DeskError(f"no suggestion {suggestion_id[:64]!r}", status=404)
        if s.state != "pending":
            raise DeskError(f"suggestion {s.id} is already {s.state}", status=409)
        if accept and s.kind == "suppress":
            self.add_suppression(
                matchers=s.matchers,
                starts_at=now,
                ends_at=s.expires_at,
                author=author,
                reason=f"accepted suggestion {s.id}: {s.detail}",
                kind="suppression",
                now=now,
            )
        s.state = "accepted" if accept else "rejected"
        s.decided_by, s.decided_at = author, now
        self.audit.add(
            now,
            author,
            f"suggestion.{s.state}",
            id=s.id,
            kind=s.kind,
            detail=s.detail,
            proposed=s.proposed,
        )
        self._save()
        return s

    def expire(self, now: float) -> None:
        changed = False
        for s in self.suggestions.values():
            if s.state == "pending" and s.expires_at <= now:
                s.state = "expired"
                changed = True
        for gone in self.book.suppressions.expire(now):
            self.audit.add(now, "sentinel", f"{gone.kind}.expired", id=gone.id)
            changed = True
        if changed:
            self._save()

    def take_lines(self) -> list[str]:
        lines, self.pending_lines = self.pending_lines, []
        return lines

    def _keep_suggestion(self, s: Suggestion) -> None:
        self.suggestions[s.id] = s
        if len(self.suggestions) > _MAX_SUGGESTIONS:  # drop the oldest decided ones first
            decided = sorted(
                (x for x in self.suggestions.values() if x.state != "pending"),
                key=lambda x: x.created_at,
            )
            for old in decided[: len(self.suggestions) - _MAX_SUGGESTIONS]:
                del self.suggestions[old.id]

    # -- persistence ----------------------------------------------------------------------
    def _save(self) -> None:
        path = self.settings.state_file
        if path is None:
            return
        doc = {
            "format": 1,
            "suppressions": [s.to_dict() for s in self.book.suppressions.api_entries()],
            "suggestions": [s.to_dict() for s in self.suggestions.values()],
        }
        try:
            write_atomically(path, orjson.dumps(doc))
        except OSError as exc:
            log.error("desk_state_write_failed", path=str(path), error=exc.strerror)

    def _load(self) -> None:
        path = self.settings.state_file
        if path is None or not path.exists():
            return
        try:
            doc = orjson.loads(path.read_bytes())
            sups: Sequence[dict[str, Any]] = doc["suppressions"]
            sugs: Sequence[dict[str, Any]] = doc["suggestions"]
            for raw in sups:
                # Checked again: a hand-edited file must not mute more than the API allows.
                s = Suppression(**raw)
                self.book.suppressions.add(
                    new_suppression(
                        matchers=s.matchers,
                        starts_at=s.starts_at,
                        ends_at=s.ends_at,
                        author=s.author,
                        reason=s.reason,
                        kind=s.kind,
                        now=s.created_at,
                        max_days=self.settings.max_suppression_days,
                        suppression_id=s.id,
                    )
                )
            for raw in sugs:
                g = Suggestion.from_dict(raw)
                self.suggestions[g.id] = g
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, SuppressionError) as exc:
            # The operator's state is not worth refusing to start over; say so loudly.
            log.error("desk_state_unreadable", path=str(path), error=str(exc))
