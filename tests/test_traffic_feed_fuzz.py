"""The capture feed's item checks face whatever a token holder sends: they never raise
anything but a counted rejection, and what they accept is bounded and clean."""

from __future__ import annotations

import math
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.admission import Admission
from sentinel.config import Config
from sentinel.traffic.config import ALERT_KINDS
from sentinel.traffic.feed import FeedCheck, Rejected

NOW = time.time()
CHECK = FeedCheck(Config(), Admission(100))

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from([*ALERT_KINDS, NOW, NOW - 10, "lyon", "video"])
)
values: Any = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=15,
)
keys = st.sampled_from(
    [
        "kind",
        "subject",
        "src",
        "device",
        "first",
        "last",
        "count",
        "evidence",
        "subject_sha256",
        "ts",
        "metrics",
        "tenant",
        "zone",
        "device_id",
    ]
)
items = st.dictionaries(keys, values, max_size=10) | values


@settings(max_examples=400, deadline=None)
@given(raw=items)
def test_alert_items_are_accepted_clean_or_rejected_with_a_reason(raw: object) -> None:
    try:
        alert, digest = CHECK.alert(raw, NOW)
    except Rejected:
        return
    assert alert.kind in ALERT_KINDS
    assert alert.count >= 0
    assert alert.first <= alert.last
    assert not any(ord(c) < 0x20 for c in alert.subject + alert.src)
    assert digest is None or len(digest) == 32


@settings(max_examples=400, deadline=None)
@given(raw=items)
def test_window_items_are_accepted_clean_or_rejected_with_a_reason(raw: object) -> None:
    try:
        record = CHECK.window(raw, NOW)
    except Rejected:
        return
    assert all(math.isfinite(v) and v >= 0 for v in record.metrics.values())
