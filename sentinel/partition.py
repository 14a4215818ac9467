"""Scale-out by partitioning the fleet over agent replicas with the broker's topic routing.

Every detector keeps state per device, and the fleet detectors per zone: a replica must see
all of a zone's messages, and no other replica any of them. The topic carries tenant and zone
(`fleet/{tenant}/{zone}/...`), so each replica subscribes only to its own tenants or zones
(`[mqtt] partition`), and the broker routes each message to exactly one replica: no shared
state, no coordination, no duplicate alerts, and a replica's persistent session keeps its
share while it restarts. What is lost is correlation across partitions (a detector never
sees two partitions together).

MQTT 5 shared subscriptions (`$share/group/...`) would balance load but deal messages of one
device to any member, which breaks per-device state; brokers with hash-based sharing (EMQX's
`hash_topic` strategy) give device affinity on top of shared subscriptions, but Mosquitto
has no such strategy, and the static split here works with any MQTT broker.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from sentinel.topics import TopicPattern

_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}")


def check_slice(spec: Mapping[str, str]) -> dict[str, str]:
    """One partition entry: `tenant` (required) and optionally `zone`, both slugs."""
    unknown = sorted(set(spec) - {"tenant", "zone"})
    if unknown:
        raise ValueError(f"only tenant and zone select a partition, not {', '.join(unknown)}")
    if "tenant" not in spec:
        raise ValueError("tenant is required")
    for key, value in spec.items():
        if not _SLUG.fullmatch(value):
            raise ValueError(f"{key} {value[:64]!r} is not a tenant/zone slug")
    return dict(spec)


def subscriptions(
    patterns: Iterable[TopicPattern], partition: Sequence[Mapping[str, str]]
) -> list[str]:
    """The topic filters a replica subscribes to: the patterns with `+` at every placeholder,
    or, with a partition, one filter per pattern and entry with its tenant (and zone) filled."""
    out: list[str] = []
    for pattern in patterns:
        if not partition:
            out.append(pattern.subscription)
            continue
        names = dict(pattern.slots)
        for spec in partition:
            levels = [
                spec.get(names[i], "+") if i in names else level
                for i, level in enumerate(pattern.levels)
            ]
            out.append("/".join(levels))
    return list(dict.fromkeys(out))


def plan(zone_sizes: Mapping[tuple[str, str], int], replicas: int) -> list[list[dict[str, str]]]:
    """Spread zones over replicas, biggest first onto the least loaded (devices per replica
    within one zone's size of each other). Returns each replica's partition entries."""
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    loads = [0] * replicas
    parts: list[list[dict[str, str]]] = [[] for _ in range(replicas)]
    for (tenant, zone), size in sorted(zone_sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        i = loads.index(min(loads))
        loads[i] += size
        parts[i].append({"tenant": tenant, "zone": zone})
    return parts


def toml_for(parts: Sequence[Sequence[Mapping[str, str]]]) -> str:
    """The `[mqtt] partition` line of each replica, ready to paste or to pass as
    SENTINEL_MQTT__PARTITION (JSON)."""
    out = []
    for i, entries in enumerate(parts):
        items = ", ".join(
            "{" + ", ".join(f'{k} = "{v}"' for k, v in entry.items()) + "}" for entry in entries
        )
        out.append(f"# replica {i}\n[mqtt]\npartition = [{items}]")
    return "\n\n".join(out)
