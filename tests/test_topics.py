from __future__ import annotations

import pytest

from sentinel.topics import TopicPattern


def test_subscription_and_match() -> None:
    p = TopicPattern.parse("fleet/{tenant}/{zone}/{kind}/{device_id}/telemetry")
    assert p.subscription == "fleet/+/+/+/+/telemetry"
    assert p.match("fleet/lyon/gerland/video/c-1/telemetry") == {
        "tenant": "lyon",
        "zone": "gerland",
        "kind": "video",
        "device_id": "c-1",
    }
    assert p.match("fleet/lyon/gerland/video/c-1/status") is None
    assert p.match("fleet/lyon/gerland/video/telemetry") is None


@pytest.mark.parametrize(
    "template", ["fleet/{nope}/x", "fleet/{kind}/{kind}", "fleet/a+b/{kind}", "fleet/#"]
)
def test_bad_patterns_are_refused(template: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        TopicPattern.parse(template)
