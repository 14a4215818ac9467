from __future__ import annotations

import json
import math
import random
import uuid
from collections import Counter

import aiohttp
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from detectors.model import CommandRecord, DeviceRef, Record, StatusRecord
from sentinel.config import MqttConfig, ValidationConfig
from sentinel.decode import INFO_KEYS, Decoder, Reason, Rejection
from sentinel.store.influx import basic_auth_header
from sentinel.store.lineprotocol import lines_for, record_line
from sentinel.topics import TopicPattern
from simulators.scenario import load_scenario
from simulators.scenario_run import prepare
from tests.conftest import Stack, influxql, rows
from tests.stack_env import secret

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


# --- the `info` object, command topics, and their line protocol --------------------------

COMMANDS = Decoder(
    ValidationConfig(),
    TopicPattern.parse("fleet/{tenant}/{zone}/{kind}/{device_id}/telemetry"),
    TopicPattern.parse("fleet/{tenant}/{zone}/{kind}/{device_id}/status"),
    TopicPattern.parse("fleet/{tenant}/{zone}/{kind}/{device_id}/command"),
)
COMMAND_TOPIC = "fleet/lyon/confluence/lighting/lyon-lum-00003/command"


def test_info_keeps_the_known_keys_only(decoder: Decoder) -> None:
    info = {"client_id": "lyon-cam-00001", "src_ip": "10.3.0.42", "firmware": "5.7.3"}
    out = decoder.decode(
        TOPIC, body(info={**info, "config_hash": "8c1f02ab", "colour": "red"}), NOW
    )
    assert isinstance(out, Record)
    assert out.info == {**info, "config_hash": "8c1f02ab"}
    plain = decoder.decode(TOPIC, body(), NOW)
    assert isinstance(plain, Record)
    assert plain.info == {}


@pytest.mark.parametrize(
    "info",
    [
        "lyon-cam-00001",
        ["client_id"],
        {f"k{i}": "v" for i in range(9)},
        {"client_id": ""},
        {"client_id": "x" * 65},
        {"firmware": 5.7},
        {"src_ip": "10.0.0.1\n"},
        {"config_hash": "caf\u00e9"},
        {"client_id": "del\x7f"},
    ],
)
def test_malformed_info_rejects_the_message(decoder: Decoder, info: object) -> None:
    out = decoder.decode(TOPIC, body(info=info), NOW)
    assert isinstance(out, Rejection)
    assert out.reason == Reason.BAD_INFO


def test_a_command_becomes_a_command_record() -> None:
    payload = orjson.dumps(
        {
            "cmd": "set_dim",
            "dim_pct": 0,
            "ramp": True,
            "note": "text",
            "ts": NOW - 5,
            "client_id": "mobile-7f3a",
        }
    )
    out = COMMANDS.decode(COMMAND_TOPIC, payload, NOW)
    assert isinstance(out, CommandRecord)
    assert out.device == ("lyon", "confluence", "lighting", "lyon-lum-00003")
    assert (out.command, out.args, out.sender, out.ts) == (
        "set_dim",
        {"dim_pct": 0.0, "ramp": 1.0},
        "mobile-7f3a",
        NOW - 5,
    )
    bare = COMMANDS.decode(COMMAND_TOPIC, b'{"cmd": "reboot"}', NOW)
    assert isinstance(bare, CommandRecord)
    assert (bare.ts, bare.sender, bare.args) == (NOW, None, {})


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"dim_pct": 0}', Reason.BAD_COMMAND),
        (b'{"cmd": "Set Dim"}', Reason.BAD_COMMAND),
        (b'{"cmd": "x", "client_id": 7}', Reason.BAD_COMMAND),
        (b'{"cmd": "x", "Bad-Arg": 1}', Reason.BAD_COMMAND),
        (orjson.dumps({"cmd": "x", **{f"a{i}": i for i in range(17)}}), Reason.BAD_COMMAND),
        (b'{"cmd": "x", "a": 1e999}', Reason.NON_FINITE),
        (orjson.dumps({"cmd": "x", "ts": NOW + 3600}), Reason.TS_FUTURE),
        (b'["set_dim"]', Reason.NOT_OBJECT),
    ],
)
def test_bad_commands_are_rejected(payload: bytes, reason: Reason) -> None:
    out = COMMANDS.decode(COMMAND_TOPIC, payload, NOW)
    assert isinstance(out, Rejection)
    assert out.reason == reason


def test_without_a_command_pattern_command_topics_are_bad_topics(decoder: Decoder) -> None:
    out = decoder.decode(COMMAND_TOPIC, b'{"cmd": "reboot"}', NOW)
    assert isinstance(out, Rejection)
    assert out.reason == Reason.BAD_TOPIC


def test_the_command_topic_setting_is_checked() -> None:
    assert MqttConfig(command_topic="").command_topic == ""
    with pytest.raises(ValidationError, match="device_id"):
        MqttConfig(command_topic="fleet/{tenant}/{zone}/{kind}/command")
    with pytest.raises(ValidationError, match="topic"):
        MqttConfig(command_topic="fleet/#")


def test_line_protocol_keeps_info_and_commands_as_escaped_fields() -> None:
    device = DeviceRef("lyon", "gerland", "video", "cam-1")
    line = record_line(
        Record(device, NOW, {"fps": 25.0}, 7, {"client_id": 'a"b', "firmware": "5.7"})
    )
    assert line == (
        'video,tenant=lyon,zone=gerland,device_id=cam-1 fps=25.0,seq=7i,info.client_id="a\\"b",'
        f'info.firmware="5.7" {round(NOW * 1000)}'
    )
    command = CommandRecord(device, NOW, "set_dim", {"dim_pct": 0.0}, "mobile-7f3a")
    assert lines_for([command]) == [
        'commands,tenant=lyon,zone=gerland,kind=video,device_id=cam-1 command="set_dim",'
        f'sender="mobile-7f3a",args.dim_pct=0.0 {round(NOW * 1000)}'
    ]


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_command_decoding_never_raises(payload: bytes) -> None:
    out = COMMANDS.decode(COMMAND_TOPIC, payload, NOW)
    if isinstance(out, CommandRecord):
        assert len(out.args) <= 16
        assert all(math.isfinite(v) for v in out.args.values())
    else:
        assert isinstance(out, Rejection)


@pytest.mark.stack
async def test_info_and_command_fields_round_trip_through_influxdb(
    stack: Stack, influx_db: str
) -> None:
    """The real InfluxDB takes the dotted string fields and gives them back by name."""
    device = DeviceRef("lyon", "gerland", "video", f"cam-{uuid.uuid4().hex[:8]}")
    info = {"client_id": device.device_id, "firmware": '5.7.3 "p1"', "src_ip": "10.3.0.42"}
    lines = lines_for(
        [
            Record(device, NOW, {"fps": 25.0}, 1, info),
            CommandRecord(device, NOW + 1, "set_dim", {"dim_pct": 0.0}, "mobile-7f3a"),
        ]
    )
    auth = basic_auth_header(stack.env["STACK_INFLUX_ADMIN_USER"], secret("influx-admin"))
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{stack.influx_url}/write",
            params={"db": influx_db, "precision": "ms"},
            data="\n".join(lines).encode(),
            headers=auth,
        ) as resp,
    ):
        assert resp.status == 204, await resp.text()
    video = rows(
        await influxql(stack, 'SELECT "info.firmware", "info.src_ip", fps FROM video', influx_db)
    )
    assert [(r["info.firmware"], r["info.src_ip"], r["fps"]) for r in video] == [
        ('5.7.3 "p1"', "10.3.0.42", 25.0)
    ]
    sent = rows(
        await influxql(stack, 'SELECT command, sender, "args.dim_pct" FROM commands', influx_db)
    )
    assert [(r["command"], r["sender"], r["args.dim_pct"]) for r in sent] == [
        ("set_dim", "mobile-7f3a", 0.0)
    ]


def test_garbage_never_buys_the_slow_parser() -> None:
    """Payloads orjson refuses reach the stdlib parser only when they may hold a non-finite
    number and are not deeply nested; big integers keep their stdlib reading."""
    deep_nan = b'{"metrics": {"a": ' + b"[" * 900 + b"NaN" + b"]" * 900 + b"}}"
    assert DECODER.decode(TOPIC, deep_nan, NOW) == Rejection(Reason.NOT_JSON, "payload is not JSON")
    big = DECODER.decode(TOPIC, b'{"ts": %d, "metrics": {"a": %s}}' % (NOW, b"1" * 25), NOW)
    assert isinstance(big, Record)
    assert big.metrics["a"] == float("1" * 25)


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_a_known_metric_name_does_not_let_a_non_finite_value_through(raw: bytes) -> None:
    decoder = Decoder(ValidationConfig(), DECODER.telemetry, DECODER.status)
    assert isinstance(decoder.decode(TOPIC, body(metrics={"fps": 25.0}), NOW), Record)
    payload = b'{"ts": %d, "metrics": {"fps": %s}}' % (NOW, raw)
    out = decoder.decode(TOPIC, payload, NOW)
    assert isinstance(out, Rejection)
    assert out.reason == Reason.NON_FINITE


def test_invented_metric_names_do_not_grow_the_decoder() -> None:
    """Checked names are remembered to skip the pattern, up to a cap: an attacker inventing
    names cannot grow it, and every name past the cap is still checked."""
    decoder = Decoder(ValidationConfig(), DECODER.telemetry, DECODER.status)
    for i in range(5000):
        assert isinstance(decoder.decode(TOPIC, body(metrics={f"m{i}": 1.0}), NOW), Record)
    assert len(decoder._metric_names) == 4096
    bad = decoder.decode(TOPIC, body(metrics={"Bad-Name": 1.0}), NOW)
    assert isinstance(bad, Rejection)
    assert bad.reason == Reason.BAD_METRIC_NAME


# --- the fast path gives the reference checks' answers ------------------------------------

# Scenarios whose attacks change payloads and topics: forged identities, tampered values,
# an unknown device, commands. Kept: the first 10 minutes and 15 minutes of each attack.
DIFF_SCENARIOS = (
    "mirai-recruitment",
    "impersonation",
    "telemetry-tampering",
    "rogue-device",
    "command-abuse",
)
BAD_LEVELS = ["", "LYON", "a" * 49, "x/y", "+", "#", "café", "tractor", "bad id!", "-a", "a" * 65]
NUMBER_TOKENS = ["NaN", "Infinity", "-Infinity", "1e999", "1" + "0" * 400, "1" + "0" * 25]
ODD_VALUES: list[object] = [
    True,
    False,
    None,
    "12",
    "",
    [1],
    {"a": 1},
    0,
    -0.0,
    1e308,
    -1e308,
    2**63 - 1,
    2**63,
    2**64 - 1,
    -(2**63),
    -1,
    1.5,
    "caf\u00e9",
    "x" * 65,
    "line\n",
    "del\x7f",
    *(f"@@{t}@@" for t in NUMBER_TOKENS),
]


def _scenario_messages() -> list[tuple[str, bytes, float]]:
    out: list[tuple[str, bytes, float]] = []
    for name in DIFF_SCENARIOS:
        run = prepare(load_scenario(name), devices=16, days=1)
        windows = [(run.start, run.start + 600.0)]
        windows += [(t.start, t.start + 900.0) for t in run.truth]
        for m in run.messages():
            if any(a <= m.ts < b for a, b in windows):
                out.append((m.topic, m.payload, m.ts + 1))
    return out


def _dumps(doc: object) -> bytes:
    """JSON with the `@@token@@` strings written as bare tokens (NaN, 1e999, huge integers)."""
    text = orjson.dumps(doc)
    for token in NUMBER_TOKENS:
        text = text.replace(b'"@@' + token.encode() + b'@@"', token.encode())
    return text


def _mutate_doc(rng: random.Random, doc: dict[str, object], now: float, ids: list[str]) -> None:
    what = rng.randrange(9)
    metrics = doc.get("metrics")
    if what == 0:
        doc["device_id"] = rng.choice([*ids, None, 7, "", "x" * 70, *BAD_LEVELS])
    elif what == 1:
        doc["ts"] = rng.choice(
            [
                *ODD_VALUES,
                now + 300.0,
                math.nextafter(now + 300.0, math.inf),
                now - 7 * 86400.0,
                math.nextafter(now - 7 * 86400.0, -math.inf),
                now + 3600.0,
                int(now),
                "2025-11-24T10:00:00+00:00",
                "2025-11-24T10:00:00",
                "yesterday",
            ]
        )
    elif what == 2:
        doc["seq"] = rng.choice([*ODD_VALUES, -1, 0, "3"])
    elif what == 3 and isinstance(metrics, dict) and metrics:
        metrics[rng.choice(list(metrics))] = rng.choice(ODD_VALUES)
    elif what == 4 and isinstance(metrics, dict):
        name = rng.choice(["Bad Name", "A", "", "new_metric", "x" * 65, "fps", "upload_kbps"])
        metrics[name] = rng.choice([1.0, 2, *ODD_VALUES])
    elif what == 5:
        doc["metrics"] = rng.choice(
            [{}, None, [1], "m", {f"m{i}": i for i in range(rng.choice([64, 65]))}]
        )
    elif what == 6:
        info = doc.get("info")
        if isinstance(info, dict) and rng.random() < 0.7:
            key = rng.choice([*INFO_KEYS, "colour", "client_id"])
            info[key] = rng.choice([*ODD_VALUES, "ok", "10.0.0.1", "x" * 64])
        else:
            doc["info"] = rng.choice(
                [None, [], "id", {f"k{i}": "v" for i in range(9)}, {"colour": 1}, {}]
            )
    elif what == 7:
        doc.pop(rng.choice(["ts", "metrics", "seq", "info", "device_id", "state", "cmd"]), None)
    else:  # command and status fields, on any topic
        doc[rng.choice(["cmd", "state", "client_id", "Bad-Arg", "dim_pct"])] = rng.choice(
            [*ODD_VALUES, "set_dim", "online", "offline", "Set Dim"]
        )


def _mutate_topic(rng: random.Random, topic: str, ids: list[str]) -> str:
    levels = topic.split("/")
    what = rng.randrange(4)
    if what == 0:
        levels[rng.randrange(len(levels))] = rng.choice(BAD_LEVELS)
    elif what == 1:
        levels[-2] = rng.choice(ids)  # another device's id: valid, but not the payload's
    elif what == 2:
        levels[-1] = rng.choice(["telemetry", "status", "command", "other"])
    else:
        chars = list(topic)
        i = rng.randrange(len(chars))
        if rng.random() < 0.5:
            del chars[i]
        else:
            chars.insert(i, rng.choice("/+#Aa-_.:é \x00"))
        return "".join(chars)
    return "/".join(levels)


def _mutate_bytes(rng: random.Random, payload: bytes) -> bytes:
    data = bytearray(payload)
    i = rng.randrange(len(data))
    what = rng.randrange(4)
    if what == 0:
        data[i] ^= 1 << rng.randrange(8)
    elif what == 1:
        data[i] = rng.randrange(256)
    elif what == 2:
        del data[i : i + rng.randint(1, 20)]
    else:
        data[i:i] = rng.choice([b"NaN", b"\xff", b"{", b"]", b"0" * 30, b",", b" "])
    return bytes(data)


def _mutations(
    good: list[tuple[str, bytes, float]], count: int, seed: int
) -> list[tuple[str, bytes, float]]:
    """Seeded variants of good messages, each followed now and then by its good original
    (so a remembered topic meets a bad payload, and a bad topic a good one)."""
    rng = random.Random(seed)
    ids = sorted({topic.split("/")[-2] for topic, _, _ in good})
    out: list[tuple[str, bytes, float]] = []
    for _ in range(count):
        topic, payload, now = rng.choice(good)
        what = rng.random()
        if what < 0.15:
            payload = _mutate_bytes(rng, payload)
        elif what < 0.35:
            topic = _mutate_topic(rng, topic, ids)
            if rng.random() < 0.5 and payload.startswith(b"{"):
                # The payload's id agrees with the new topic, or is absent: the topic's own
                # checks decide.
                doc = orjson.loads(payload)
                doc.pop("device_id", None)
                if rng.random() < 0.5:
                    doc["device_id"] = topic.split("/")[-2]
                payload = _dumps(doc)
            elif rng.random() < 0.3:
                payload = _mutate_bytes(rng, payload)
        else:
            doc = orjson.loads(payload) if payload.startswith(b"{") else {"state": "online"}
            for _ in range(rng.choice([1, 1, 2, 3])):
                _mutate_doc(rng, doc, now, ids)
            payload = _dumps(doc) if rng.random() < 0.95 else _dumps([doc])
            if rng.random() < 0.1:
                topic = _mutate_topic(rng, topic, ids)
        out.append((topic, payload, now))
        if rng.random() < 0.3:
            out.append(rng.choice(good))
    out += [(t, p + b" " * 5000, n) for t, p, n in good[:5]]  # oversized
    out += [(t, b"offline", n) for t, _, n in good[:5]]  # a last will on any topic
    return out


def _answer(out: object) -> str:
    """Everything a result says, metric and info ORDER and int/float types included."""
    return repr(out)


def _differences(messages: list[tuple[str, bytes, float]]) -> list[str]:
    def build(fast: bool) -> Decoder:
        return Decoder(
            ValidationConfig(),
            COMMANDS.telemetry,
            COMMANDS.status,
            COMMANDS.command,
            fast=fast,
        )

    fast, reference = build(True), build(False)
    wrong: list[str] = []
    for topic, payload, now in messages:
        got, want = fast.decode(topic, payload, now), reference.decode(topic, payload, now)
        if _answer(got) != _answer(want) or got != want:
            wrong.append(f"{topic} {payload[:200]!r}: fast {got!r}, reference {want!r}")
    # The fast path was taken: every valid telemetry topic is remembered, by the fast one only.
    assert len(fast._topic_devices) > 16
    assert not reference._topic_devices
    return wrong


@pytest.fixture(scope="module")
def scenario_messages() -> list[tuple[str, bytes, float]]:
    return _scenario_messages()


def test_the_fast_path_answers_every_scenario_message_as_the_reference_does(
    scenario_messages: list[tuple[str, bytes, float]],
) -> None:
    answers = Counter(
        type(DECODER.decode(topic, payload, now)).__name__
        for topic, payload, now in scenario_messages
    )
    assert answers["Record"] > 3000  # a real fleet's mix
    assert answers["StatusRecord"] > 0
    assert _differences(scenario_messages) == []


def test_the_fast_path_answers_mutated_messages_as_the_reference_does(
    scenario_messages: list[tuple[str, bytes, float]],
) -> None:
    mutated = _mutations(scenario_messages, 4000, seed=5)
    # Every message first, so that topics are remembered before their variants arrive.
    messages = scenario_messages + mutated
    reasons = {
        out.reason for t, p, n in mutated if isinstance(out := COMMANDS.decode(t, p, n), Rejection)
    }
    assert reasons == set(Reason) - {Reason.DEVICE_CAP}  # the variants reach every check
    assert _differences(messages) == []


def test_remembered_topics_are_valid_ones_and_capped() -> None:
    rules = ValidationConfig(max_devices=10)
    decoder = Decoder(rules, DECODER.telemetry, DECODER.status)
    reference = Decoder(rules, DECODER.telemetry, DECODER.status, fast=False)
    topics = [f"fleet/lyon/gerland/video/cam-{i}/telemetry" for i in range(40)]
    topics += ["fleet/lyon/gerland/tractor/t-1/telemetry", "fleet/LYON/gerland/video/c/telemetry"]
    for topic in topics * 2:
        got = decoder.decode(topic, body(), NOW)
        assert got == reference.decode(topic, body(), NOW)
    assert list(decoder._topic_devices) == topics[:10]
    # A topic remembered, then a payload naming another device: still refused.
    out = decoder.decode(topics[0], body(device_id="cam-99"), NOW)
    assert out == Rejection(Reason.ID_MISMATCH, "payload device_id differs from the topic's")


def test_an_integer_ts_past_a_float_is_not_finite_and_does_not_raise() -> None:
    payload = b'{"ts": 1%s, "metrics": {"a": NaN}}' % (b"0" * 400)
    out = DECODER.decode(TOPIC, payload, NOW)
    assert out == Rejection(Reason.NON_FINITE, "ts is not finite")
