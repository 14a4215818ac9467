from __future__ import annotations

import pytest

from sentinel.partition import check_slice, plan, subscriptions, toml_for
from sentinel.topics import TopicPattern

TELEMETRY = TopicPattern.parse("fleet/{tenant}/{zone}/{kind}/{device_id}/telemetry")
STATUS = TopicPattern.parse("fleet/{tenant}/{zone}/{kind}/{device_id}/status")


def test_no_partition_subscribes_to_everything() -> None:
    assert subscriptions([TELEMETRY, STATUS], ()) == [
        "fleet/+/+/+/+/telemetry",
        "fleet/+/+/+/+/status",
    ]


def test_partition_fills_tenant_and_zone_levels() -> None:
    share = [{"tenant": "lyon", "zone": "gerland"}, {"tenant": "villeurbanne"}]
    assert subscriptions([TELEMETRY, STATUS], share) == [
        "fleet/lyon/gerland/+/+/telemetry",
        "fleet/villeurbanne/+/+/+/telemetry",
        "fleet/lyon/gerland/+/+/status",
        "fleet/villeurbanne/+/+/+/status",
    ]


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"zone": "gerland"}, "tenant is required"),
        ({"tenant": "lyon", "kind": "video"}, "only tenant and zone"),
        ({"tenant": "#"}, "not a tenant/zone slug"),
        ({"tenant": "lyon", "zone": "a/b"}, "not a tenant/zone slug"),
    ],
)
def test_a_partition_entry_cannot_widen_or_break_the_filter(
    spec: dict[str, str], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        check_slice(spec)


def test_plan_balances_devices_and_puts_each_zone_on_one_replica() -> None:
    sizes = {("lyon", f"z{i}"): 100 + 37 * i for i in range(12)}
    parts = plan(sizes, 3)
    zones = [(e["tenant"], e["zone"]) for part in parts for e in part]
    assert sorted(zones) == sorted(sizes)  # every zone once
    loads = [sum(sizes[(e["tenant"], e["zone"])] for e in part) for part in parts]
    assert max(loads) - min(loads) <= max(sizes.values())
    assert toml_for(parts).count("partition = [") == 3
