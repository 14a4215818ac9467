"""The alert book a configuration asks for: policy, inhibitions, the file's suppressions."""

from __future__ import annotations

from sentinel.alerting.alerts import AlertBook, AlertPolicy
from sentinel.alerting.suppressions import Suppression, SuppressionError, new_suppression
from sentinel.config import Config
from sentinel.errors import ConfigError
from sentinel.metrics import Metrics


def alert_policy(cfg: Config) -> AlertPolicy:
    a = cfg.alerting
    return AlertPolicy(
        incident_quiet_s=a.incident_quiet_s,
        max_notified_per_incident=a.max_notified_per_incident,
        max_open_incidents=a.max_open_incidents,
        fleet_min_zones=a.fleet_min_zones,
        inhibit=tuple((rule.source, rule.targets) for rule in a.inhibit),
        max_suppressions=a.max_suppressions,
    )


def config_suppressions(cfg: Config) -> list[Suppression]:
    """[[suppressions]] of the file, validated; their ids are stable across reloads."""
    out, problems = [], []
    for i, entry in enumerate(cfg.suppressions):
        try:
            out.append(
                new_suppression(
                    matchers=entry.matchers,
                    starts_at=entry.starts_at.timestamp(),
                    ends_at=entry.ends_at.timestamp(),
                    author=entry.author,
                    reason=entry.reason,
                    kind=entry.kind,
                    now=entry.starts_at.timestamp(),
                    max_days=cfg.alerting.max_suppression_days,
                    source="config",
                    suppression_id=f"cfg-{i}",
                )
            )
        except SuppressionError as exc:
            problems.append(f"suppressions[{i}]: {exc}")
    if problems:
        raise ConfigError("suppressions", problems)
    return out


def build_book(cfg: Config, metrics: Metrics) -> AlertBook:
    book = AlertBook(metrics, alert_policy(cfg))
    book.suppressions.replace_config(config_suppressions(cfg))
    return book
