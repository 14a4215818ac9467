from __future__ import annotations

import json
import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.model import Record, StatusRecord
from sentinel.config import ValidationConfig
from sentinel.decode import Decoder, Reason, Rejection
from sentinel.topics import TopicPattern

NOW = 1_790_000_000.0
TOPIC = "fleet/lyon/part-dieu/video/lyon-cam-00001/telemetry"


DECODER = Decoder(
    ValidationConfig(),
    TopicPattern.parse("fleet/{tenant}/{zone}/{kind}/{device_id}/telemetry"),
    TopicPattern.parse("fleet/{tenant}/{zone}/{kind}/{device_id}/status"),
)


@pytest.fixture
def decoder() -> Decoder:
    return DECODER


def body(**overrides: object) -> bytes:
    doc: dict[str, object] = {"ts": NOW, "seq": 3, "metrics": {"upload_kbps": 3900.5, "fps": 25}}
    doc.update(overrides)
    return orjson.dumps(doc)


def test_valid_telemetry_becomes_a_record(decoder: Decoder) -> None:
    out = decoder.decode(TOPIC, body(), NOW)
    assert isinstance(out, Record)
    assert out.device == ("lyon", "part-dieu", "video", "lyon-cam-00001")
    assert out.metrics == {"upload_kbps": 3900.5, "fps": 25.0}
    assert out.seq == 3
    assert out.ts == NOW


def test_rfc3339_timestamp_and_booleans(decoder: Decoder) -> None:
    out = decoder.decode(
        TOPIC, body(ts="2026-09-21T14:13:20+00:00", metrics={"on": True, "x": False}), NOW
    )
    assert isinstance(out, Record)
    assert out.ts == NOW
    assert out.metrics == {"on": 1.0, "x": 0.0}


CASES: list[tuple[str, bytes, Reason]] = [
    (TOPIC, b"not json at all", Reason.NOT_JSON),
    (TOPIC, b"\xff\xfe\xfa", Reason.NOT_UTF8),
    (TOPIC, b"[1, 2]", Reason.NOT_OBJECT),
    (TOPIC, b"x" * 5000, Reason.OVERSIZED),
    (TOPIC, body(metrics={"a": "12"}), Reason.BAD_TYPE),
    (TOPIC, body(metrics={"a": [1]}), Reason.BAD_TYPE),
    (TOPIC, b'{"ts": %d, "metrics": {"a": NaN}}' % NOW, Reason.NON_FINITE),
    (TOPIC, b'{"ts": %d, "metrics": {"a": -Infinity}}' % NOW, Reason.NON_FINITE),
    (TOPIC, b'{"ts": %d, "metrics": {"a": 1e999}}' % NOW, Reason.NON_FINITE),
    (TOPIC, b'{"ts": %d, "metrics": {"a": 1%s}}' % (NOW, b"0" * 400), Reason.NON_FINITE),
    (TOPIC, body(metrics={}), Reason.NO_METRICS),
    (TOPIC, body(metrics={f"m{i}": 1 for i in range(65)}), Reason.TOO_MANY_METRICS),
    (TOPIC, body(metrics={"Bad Name": 1}), Reason.BAD_METRIC_NAME),
    (TOPIC, body(ts=NOW + 3600), Reason.TS_FUTURE),
    (TOPIC, body(ts=NOW - 8 * 86400), Reason.TS_PAST),
    (TOPIC, body(ts="yesterday"), Reason.BAD_TS),
    (TOPIC, body(ts="2026-09-21T21:33:20"), Reason.BAD_TS),
    (TOPIC, orjson.dumps({"metrics": {"a": 1}}), Reason.MISSING_TS),
    (TOPIC, body(seq=-1), Reason.BAD_SEQ),
    (TOPIC, body(seq=1.5), Reason.BAD_SEQ),
    (TOPIC, body(device_id="lyon-cam-00002"), Reason.ID_MISMATCH),
    ("fleet/lyon/part-dieu/video//telemetry", body(), Reason.MISSING_ID),
    ("fleet/lyon/part-dieu/video/bad id!/telemetry", body(), Reason.BAD_ID),
    ("fleet/lyon/part-dieu/tractor/t-1/telemetry", body(), Reason.UNKNOWN_KIND),
    ("fleet/LYON/part-dieu/video/c-1/telemetry", body(), Reason.BAD_TOPIC),
    ("fleet/lyon/part-dieu/video/c-1/extra/telemetry", body(), Reason.BAD_TOPIC),
    ("elsewhere/lyon/part-dieu/video/c-1/telemetry", body(), Reason.BAD_TOPIC),
    ("fleet/lyon/part-dieu/video/c-1/status", b"maybe", Reason.NOT_JSON),
    ("fleet/lyon/part-dieu/video/c-1/status", b'{"state": "asleep"}', Reason.BAD_STATUS),
]


@pytest.mark.parametrize(("topic", "payload", "reason"), CASES)
def test_bad_input_is_rejected_with_its_reason(
    decoder: Decoder, topic: str, payload: bytes, reason: Reason
) -> None:
    out = decoder.decode(topic, payload, NOW)
    assert isinstance(out, Rejection)
    assert out.reason == reason


def test_status_payloads(decoder: Decoder) -> None:
    topic = "fleet/lyon/gerland/lighting/lyon-lum-00007/status"
    bare = decoder.decode(topic, b"offline", NOW)
    assert isinstance(bare, StatusRecord)
    assert not bare.online
    assert bare.ts == NOW  # a last will carries no time: the broker sends it now
    doc = decoder.decode(topic, b'{"state": "online", "ts": 1789999000}', NOW)
    assert isinstance(doc, StatusRecord)
    assert doc.online
    assert doc.ts == 1_789_999_000.0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(
    topic=st.text(max_size=80) | st.just(TOPIC),
    payload=st.binary(max_size=600) | json_values.map(lambda v: json.dumps(v).encode()),
)
def test_decoder_never_raises_and_records_are_sane(topic: str, payload: bytes) -> None:
    out = DECODER.decode(topic, payload, NOW)
    if isinstance(out, Record):
        assert all(math.isfinite(v) for v in out.metrics.values())
        assert NOW - 7 * 86400 <= out.ts <= NOW + 300
    else:
        assert isinstance(out, Rejection | StatusRecord)


@settings(max_examples=200, deadline=None)
@given(
    metrics=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
        st.floats(allow_nan=False, allow_infinity=False, width=64) | st.integers(-(10**12), 10**12),
        min_size=1,
        max_size=20,
    ),
    dt=st.floats(min_value=-86400, max_value=299),
)
def test_any_valid_payload_is_accepted_unchanged(metrics: dict[str, float], dt: float) -> None:
    out = DECODER.decode(TOPIC, body(ts=NOW + dt, metrics=metrics), NOW)
    assert isinstance(out, Record)
    assert out.metrics == {k: float(v) for k, v in metrics.items()}
