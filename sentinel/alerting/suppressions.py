"""Suppressions and maintenance windows: who muted what, why, and until when.

A suppression matches alerts by exact label values (`*` at the end of a value matches a
prefix) during [starts_at, ends_at), in device time, so that a replay or a backtest mutes the
same alerts as the live agent did. Every suppression has an author, a reason and an expiry:
nothing is muted forever. Suppressed alerts are still stored (state `suppressed`), never
notified.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

MATCHABLE_LABELS = ("tenant", "zone", "kind", "device_id", "detector", "severity")
_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\*?|\*")

SuppressionKind = Literal["suppression", "maintenance"]


class SuppressionError(ValueError):
    """A suppression that cannot be accepted; the message says why."""


def check_matchers(matchers: Mapping[str, str]) -> dict[str, str]:
    if not matchers:
        raise SuppressionError("matchers: at least one label is required")
    out: dict[str, str] = {}
    for label, value in matchers.items():
        if label not in MATCHABLE_LABELS:
            raise SuppressionError(
                f"matchers: unknown label {label[:64]!r} (known: {', '.join(MATCHABLE_LABELS)})"
            )
        if not isinstance(value, str) or not _VALUE.fullmatch(value):
            raise SuppressionError(f"matchers.{label}: not a label value or prefix*")
        out[label] = value
    return out


def _matches(pattern: str, value: str) -> bool:
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


@dataclass(frozen=True, slots=True)
class Suppression:
    id: str
    matchers: dict[str, str]
    starts_at: float
    ends_at: float
    author: str
    reason: str
    kind: SuppressionKind = "suppression"
    created_at: float = 0.0
    source: Literal["config", "api"] = "api"

    def active(self, ts: float) -> bool:
        return self.starts_at <= ts < self.ends_at

    def matches(self, labels: Mapping[str, str], ts: float) -> bool:
        return self.active(ts) and all(
            _matches(pattern, labels.get(label, "")) for label, pattern in self.matchers.items()
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_suppression(
    *,
    matchers: Mapping[str, str],
    starts_at: float,
    ends_at: float,
    author: str,
    reason: str,
    kind: SuppressionKind,
    now: float,
    max_days: float,
    source: Literal["config", "api"] = "api",
    suppression_id: str | None = None,
) -> Suppression:
    """Validate and build one; raises SuppressionError naming the problem."""
    author, reason = author.strip(), reason.strip()
    if not author or len(author) > 128:
        raise SuppressionError("author: required, at most 128 characters")
    if not reason or len(reason) > 1024:
        raise SuppressionError("reason: required, at most 1024 characters")
    if kind not in ("suppression", "maintenance"):
        raise SuppressionError("kind: must be suppression or maintenance")
    if not ends_at > starts_at:
        raise SuppressionError("ends_at: must be after starts_at")
    if ends_at - starts_at > max_days * 86400:
        raise SuppressionError(f"ends_at: at most {max_days:g} days after starts_at")
    return Suppression(
        id=suppression_id or f"s-{secrets.token_hex(6)}",
        matchers=check_matchers(matchers),
        starts_at=starts_at,
        ends_at=ends_at,
        author=author,
        reason=reason,
        kind=kind,
        created_at=now,
        source=source,
    )


class Suppressions:
    """The current suppressions: the config's (fixed) and the API's (bounded, persisted by
    the caller through `api_entries`)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: dict[str, Suppression] = {}

    def __len__(self) -> int:
        return len(self._items)

    def all(self) -> list[Suppression]:
        return sorted(self._items.values(), key=lambda s: (s.starts_at, s.id))

    def api_entries(self) -> list[Suppression]:
        return [s for s in self.all() if s.source == "api"]

    def get(self, suppression_id: str) -> Suppression | None:
        return self._items.get(suppression_id)

    def add(self, suppression: Suppression) -> None:
        if suppression.id in self._items:
            raise SuppressionError(f"id {suppression.id} exists")
        if len(self._items) >= self.capacity:
            raise SuppressionError(f"at most {self.capacity} suppressions: remove expired ones")
        self._items[suppression.id] = suppression

    def remove(self, suppression_id: str) -> Suppression:
        found = self._items.get(suppression_id)
        if found is None:
            raise KeyError(suppression_id)
        if found.source == "config":
            raise SuppressionError("a suppression from the config file is removed in the file")
        return self._items.pop(suppression_id)

    def replace_config(self, entries: Iterable[Suppression]) -> None:
        """A reloaded config's suppressions replace the previous config's."""
        kept = {k: v for k, v in self._items.items() if v.source != "config"}
        self._items = kept | {s.id: s for s in entries}

    def expire(self, now: float) -> list[Suppression]:
        gone = [s for s in self._items.values() if s.ends_at <= now and s.source == "api"]
        for s in gone:
            del self._items[s.id]
        return gone

    def match(self, labels: Mapping[str, str], ts: float) -> Suppression | None:
        for s in self._items.values():
            if s.matches(labels, ts):
                return s
        return None
