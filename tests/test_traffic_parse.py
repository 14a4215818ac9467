"""The capture reader, TCP reassembly and the MQTT parser: cross-checked, fuzzed, bounded."""

from __future__ import annotations

import contextlib
import itertools
import random
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib.mqtt import MQTT

from sentinel.traffic import Analyzer, CaptureError, CaptureReader, analyze_file
from sentinel.traffic.mqtt import (
    Connack,
    Connect,
    Control,
    Framer,
    Malformed,
    MalformedError,
    PacketType,
    Publish,
    Subscribe,
    Will,
    connect_prefix,
    parse_packet,
)
from sentinel.traffic.streams import Half
from sentinel.traffic.synth import (
    Capture,
    Link,
    mqtt_connack,
    mqtt_connect,
    mqtt_control,
    mqtt_publish,
    mqtt_subscribe,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00+#/"), max_size=40)


def parse_all(data: bytes, level: int = 4) -> list[object]:
    framer = Framer(level=level)
    return list(framer.feed(data))


# --- MQTT 3.x, cross-checked with scapy.contrib.mqtt ------------------------------------------


@given(
    client_id=_text,
    username=st.none() | _text,
    keep_alive=st.integers(0, 65535),
    will_retain=st.none() | st.booleans(),
    level=st.sampled_from([3, 4]),
)
@FUZZ
def test_connect_matches_scapy(
    client_id: str, username: str | None, keep_alive: int, will_retain: bool | None, level: int
) -> None:
    will = None if will_retain is None else ("fleet/a/b/c/d/status", will_retain)
    data = mqtt_connect(client_id, username, "pw", keep_alive=keep_alive, level=level, will=will)
    expected_will = None if will is None else Will(will[0], 1, will[1])
    expected = Connect(level, client_id, username, True, keep_alive, True, expected_will)
    assert parse_all(data) == [expected]
    assert connect_prefix(data) is True
    dissected = MQTT(data)
    assert dissected.klive == keep_alive
    assert dissected.clientId == client_id.encode()


@given(
    topic=_text.filter(bool), size=st.integers(0, 3000), qos=st.integers(0, 2), retain=st.booleans()
)
@FUZZ
def test_publish_matches_scapy(topic: str, size: int, qos: int, retain: bool) -> None:
    data = mqtt_publish(topic, b"x" * size, qos=qos, retain=retain, packet_id=7)
    packet_id = 7 if qos else None
    assert parse_all(data) == [Publish(topic, qos, retain, False, packet_id, size)]
    dissected = MQTT(data)
    assert (dissected.QOS, dissected.RETAIN, len(dissected.value)) == (qos, int(retain), size)


def test_subscribe_connack_and_controls() -> None:
    data = mqtt_subscribe("fleet/#", "$SYS/#", qos=1, packet_id=9) + mqtt_connack(5)
    data += mqtt_control(12) + mqtt_control(13) + mqtt_control(14)
    assert parse_all(data) == [
        Subscribe(9, (("fleet/#", 1), ("$SYS/#", 1))),
        Connack(False, 5),
        Control(PacketType.PINGREQ),
        Control(PacketType.PINGRESP),
        Control(PacketType.DISCONNECT),
    ]


# --- MQTT 5 (scapy's dissector has no properties: hand-built) ---------------------------------


def _v5_connect() -> bytes:
    props = b"\x11\x00\x00\x0e\x10"  # session expiry interval 3600
    will_props = b"\x01\x01"  # payload format indicator
    body = b"\x00\x04MQTT\x05\xee\x00\x3c" + bytes([len(props)]) + props
    body += b"\x00\x02c5" + bytes([len(will_props)]) + will_props
    body += b"\x00\x03w/t\x00\x01x" + b"\x00\x01u\x00\x01p"
    return bytes([0x10, len(body)]) + body


def test_mqtt5_packets_step_over_properties() -> None:
    connect = _v5_connect()
    publish = b"\x33\x0d\x00\x03a/b\x00\x05\x03\x23\x00\x01ok"  # with a topic alias
    subscribe = b"\x82\x09\x00\x02\x00\x00\x03a/b\x2e"  # options: QoS 2, no-local, RAP, handling 2
    connack = b"\x20\x03\x00\x86\x00"  # bad user name or password
    framer = Framer()
    assert framer.feed(connect) == [Connect(5, "c5", "u", True, 60, True, Will("w/t", 1, True))]
    framer.level = 5  # the stream sets it from the CONNECT
    assert framer.feed(publish + subscribe + connack) == [
        Publish("a/b", 1, True, False, 5, 2),
        Subscribe(2, (("a/b", 2),)),
        Connack(False, 0x86),
    ]
    assert Connack(False, 0x86).refused
    assert not Connack(True, 0).refused


# --- malformed --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\x00", "unknown_type"),
        (b"\xf0\x00", "unknown_type"),  # AUTH before MQTT 5
        (b"\x36\x05\x00\x01a\x00\x01", "invalid_qos"),
        (b"\x82\x06\x00\x01\x00\x01#\x03", "invalid_qos"),
        (b"\x80\x06\x00\x01\x00\x01#\x00", "reserved_flags"),
        (b"\xc1\x00", "reserved_flags"),
        (b"\x82\x06\x00\x01\x00\x01#\x04", "reserved_flags"),  # v3 subscription option bits
        (b"\x10\x0c\x00\x04MQTT\x04\x03\x00\x3c\x00\x00", "reserved_flags"),
        (b"\x10\x0c\x00\x04MQTT\x07\x02\x00\x3c\x00\x00", "bad_protocol"),
        (b"\x10\x0c\x00\x04HTTP\x04\x02\x00\x3c\x00\x00", "bad_protocol"),
        (b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x05", "truncated"),
        (b"\x30\x04\x00\x02\xff\xfe", "bad_utf8"),
        (b"\x30\x05\x00\x03a/#", "protocol_violation"),
        (b"\x82\x02\x00\x01", "protocol_violation"),  # SUBSCRIBE without a filter
        (b"\xc0\x01\x00", "protocol_violation"),  # PINGREQ with a body
        (b"\x30\xff\xff\xff\xff\x01", "bad_remaining_length"),
    ],
)
def test_malformed_reasons(data: bytes, reason: str) -> None:
    packets = parse_all(data)
    assert len(packets) == 1
    assert isinstance(packets[0], Malformed)
    assert packets[0].reason == reason


def test_framing_survives_field_errors_but_not_bad_lengths() -> None:
    good = mqtt_control(12)
    packets = parse_all(b"\x36\x05\x00\x01a\x00\x01" + good)
    assert [type(p) for p in packets] == [Malformed, Control]
    framer = Framer()
    assert [type(p) for p in framer.feed(b"\x30\xff\xff\xff\xff\x01" + good)] == [Malformed]
    assert framer.dead
    assert framer.feed(good) == []


def test_oversized_packets_are_skipped_without_buffering() -> None:
    framer = Framer(max_buffer=4096, max_packet=100_000)
    big = mqtt_publish("a/b", bytes(200_000))
    sub = b"\x82" + bytes([0x80, 0x80, 0x01]) + bytes(16384)  # a 16 kB SUBSCRIBE
    out: list[object] = []
    for data in (big, sub, mqtt_control(12)):
        for i in range(0, len(data), 1000):
            out += framer.feed(data[i : i + 1000])
            assert framer.buffered <= 4096 + 5
    assert [(type(p), getattr(p, "reason", None)) for p in out] == [
        (Malformed, "oversized"),
        (Malformed, "oversized"),
        (Control, None),
    ]


def test_a_run_of_garbage_kills_the_framer() -> None:
    framer = Framer()
    assert len(framer.feed(b"\x00\x00" * 20)) == 8
    assert framer.dead


# --- streams: every split, every order --------------------------------------------------------

_SESSION = (
    mqtt_connect("c", "u", "p", will=("w", False))
    + mqtt_subscribe("a/+", "b/#")
    + mqtt_publish("a/b", bytes(3000), qos=1)
    + mqtt_control(12)
)


@given(st.lists(st.integers(1, len(_SESSION) - 1), max_size=12))
@FUZZ
def test_framer_is_split_invariant(cuts: list[int]) -> None:
    whole = parse_all(_SESSION)
    framer = Framer()
    bounds = [0, *sorted(set(cuts)), len(_SESSION)]
    pieces = [_SESSION[a:b] for a, b in itertools.pairwise(bounds)]
    assert [p for piece in pieces for p in framer.feed(piece)] == whole
    assert len(whole) == 4


@given(
    st.lists(st.integers(1, len(_SESSION) - 1), max_size=10),
    st.randoms(use_true_random=False),
    st.integers(0, 2**32 - 1),
)
@FUZZ
def test_reassembly_of_reordered_and_repeated_segments(
    cuts: list[int], rnd: random.Random, isn: int
) -> None:
    bounds = [0, *sorted(set(cuts)), len(_SESSION)]
    segments = [(a, _SESSION[a:b]) for a, b in itertools.pairwise(bounds)]
    first, rest = segments[0], segments[1:]
    delivery = rest + rnd.sample(rest, k=len(rest) // 2)  # out of order, some twice
    rnd.shuffle(delivery)
    half = Half()
    half.next_seq = isn  # sequence numbers may wrap around 2**32
    out = b""
    for offset, data in [first, *delivery]:
        got = half.push((isn + offset) & 0xFFFFFFFF, data, cap=1 << 20)
        assert got is not None
        out += got
    assert out == _SESSION
    assert half.held_bytes == 0


def test_overlapping_retransmission_adds_only_new_bytes() -> None:
    half = Half()
    assert half.push(100, b"abcd", 1000) == b"abcd"
    assert half.push(102, b"cdef", 1000) == b"ef"
    assert half.push(100, b"ab", 1000) == b""
    assert half.push(110, b"kl", 1000) == b""  # held: 106..110 missing
    assert half.push(106, b"ghij", 1000) == b"ghijkl"
    assert half.push(200, bytes(2000), 1000) is None  # a hole we cannot wait for


def test_gap_abandons_the_direction_and_is_counted(tmp_path: Path) -> None:
    cap = Capture()
    conn = cap.tcp("10.0.0.5", "10.0.0.1", 40000, ts=100.0)
    conn.exchange(100.1, mqtt_connect("c", "u", "p"), mqtt_connack(0))
    conn.raw(100.2, bytes(70_000), seq_offset=5000)  # 5000 bytes never captured
    conn.send(100.3, mqtt_publish("a/b", b"x"))
    analysis = analyze_file(cap.write(tmp_path / "gap.pcap"), keep_events=True)
    assert analysis.summary.reassembly_gaps == 1
    assert analysis.summary.mqtt_by_type == {"CONNACK": 1, "CONNECT": 1}


# --- captures: link types, formats, IPv6, recognition by content ------------------------------


@pytest.mark.parametrize("link", ["ether", "sll", "sll2", "raw"])
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_link_types_formats_and_ipv6(tmp_path: Path, link: Link, fmt: str, ipv6: bool) -> None:
    client, server = ("fd00::5", "fd00::1") if ipv6 else ("10.0.0.5", "10.0.0.1")
    cap = Capture(link)
    conn = cap.tcp(client, server, 40000, 18830, ts=1000.0)  # not a standard MQTT port
    conn.exchange(1000.25, mqtt_connect("dev", "dev", "pw"), mqtt_connack(0))
    conn.exchange(1000.5, mqtt_publish("fleet/a/b/c/dev/telemetry", b"{}"))
    path = cap.write(tmp_path / f"c.{fmt}", "pcapng" if fmt == "pcapng" else "pcap")
    analysis = analyze_file(path, keep_events=True)
    assert analysis.summary.mqtt_by_type == {"CONNACK": 1, "CONNECT": 1, "PUBLISH": 1}
    first = analysis.events[0]
    assert first.ts == pytest.approx(1000.25, abs=1e-6)
    assert (first.src.ip, first.dst.port, first.from_client) == (client, 18830, True)
    assert first.client_id == "dev"
    assert analysis.events[2].username == "dev"
    assert analysis.summary.packets == 7
    assert analysis.summary.not_ip == 0


def test_not_mqtt_on_any_port_and_midstream_pickup(tmp_path: Path) -> None:
    cap = Capture()
    http = cap.tcp("10.0.0.5", "10.0.0.1", 40001, 8080, ts=10.0)
    http.exchange(10.1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n")
    late = cap.tcp("10.0.0.6", "10.0.0.1", 40002, 17501, ts=10.0, handshake=False)
    late.exchange(10.2, mqtt_control(12), mqtt_control(13))  # picked up at a ping
    late.exchange(10.3, mqtt_publish("t", b"x"))
    analysis = analyze_file(cap.write(tmp_path / "c.pcap"), keep_events=True)
    s = analysis.summary
    assert (s.tcp_streams, s.mqtt_streams, s.mqtt_midstream) == (2, 1, 1)
    assert s.mqtt_by_type == {"PINGREQ": 1, "PINGRESP": 1, "PUBLISH": 1}
    assert not any(isinstance(e.packet, Malformed) for e in analysis.events)


def test_midstream_pickup_inside_a_packet_is_not_malformed(tmp_path: Path) -> None:
    cap = Capture()
    late = cap.tcp("10.0.0.6", "10.0.0.1", 40002, 1883, ts=10.0, handshake=False)
    late.send(10.1, mqtt_publish("a/b", bytes(3000))[1500:], from_client=False)  # a tail
    late.send(10.2, mqtt_publish("a/b", b"x"), from_client=False)
    late.exchange(10.3, mqtt_control(12), mqtt_control(13))
    analysis = analyze_file(cap.write(tmp_path / "c.pcap"))
    s = analysis.summary
    assert (s.mqtt_streams, s.mqtt_midstream, s.mqtt_desynced) == (1, 1, 1)
    assert s.parse_errors == 0
    assert s.mqtt_by_type == {"PINGREQ": 1}  # the server's direction was dropped


def test_publish_before_connect_on_a_broker_port(tmp_path: Path) -> None:
    cap = Capture()
    conn = cap.tcp("10.0.0.5", "10.0.0.1", 40000, 1883, ts=1.0)
    conn.send(1.1, mqtt_publish("a/b", b"x"))
    analysis = analyze_file(cap.write(tmp_path / "c.pcap"), keep_events=True)
    kinds = [type(e.packet).__name__ for e in analysis.events]
    assert kinds == ["Malformed", "Publish"]
    assert analysis.summary.parse_errors_by_reason == {"before_connect": 1}


# --- robustness -------------------------------------------------------------------------------


@given(st.binary(max_size=300), st.integers(0, 15), st.integers(0, 5))
@FUZZ
def test_parse_packet_raises_only_malformed_error(body: bytes, code: int, level: int) -> None:
    for flags in (0, 2, 0xB):
        with contextlib.suppress(MalformedError):
            parse_packet(code << 4 | flags, body, len(body), level)


@given(st.lists(st.binary(max_size=64), max_size=20))
@FUZZ
def test_framer_never_crashes_on_random_bytes(chunks: list[bytes]) -> None:
    framer = Framer(max_buffer=1024, max_packet=4096)
    for chunk in chunks:
        framer.feed(chunk)
        assert framer.buffered <= 1024 + 5


@given(
    st.lists(
        st.tuples(st.sampled_from([0, 1, 12, 101, 113, 228, 229, 276]), st.binary(max_size=120)),
        max_size=30,
    )
)
@FUZZ
def test_analyzer_never_crashes_on_random_frames(frames: list[tuple[int, bytes]]) -> None:
    analyzer = Analyzer(keep_events=True)
    for i, (linktype, frame) in enumerate(frames):
        analyzer.feed(float(i), linktype, frame)
    assert analyzer.finish().summary.packets == len(frames)


def _sample_capture(tmp_path: Path, fmt: str) -> bytes:
    cap = Capture()
    conn = cap.tcp("10.0.0.5", "10.0.0.1", 40000, ts=1.0)
    conn.exchange(1.1, mqtt_connect("c", "u", "p"), mqtt_connack(0))
    for i in range(5):
        conn.exchange(2.0 + i, mqtt_publish("fleet/x", bytes(100)))
    path = tmp_path / f"s.{fmt}"
    return (cap.write(path, "pcapng") if fmt == "pcapng" else cap.write(path)).read_bytes()


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_truncated_captures_read_a_prefix(tmp_path: Path, fmt: str) -> None:
    data = _sample_capture(tmp_path, fmt)
    full = analyze_file(tmp_path / f"s.{fmt}").summary.packets
    path = tmp_path / "cut"
    previous = 0
    for cut in range(0, len(data), 7):
        path.write_bytes(data[:cut])
        try:
            reader = CaptureReader(path)
        except CaptureError:
            assert cut < 28 or fmt == "pcapng"
            continue
        with reader:
            packets = sum(1 for _ in reader)
        assert previous <= packets <= full  # more bytes never read fewer packets
        previous = packets
    path.write_bytes(data[:-1])
    with CaptureReader(path) as reader:
        assert sum(1 for _ in reader) == full - 1
        assert reader.damage is not None
        assert "truncated" in reader.damage


@given(st.binary(max_size=400), st.sampled_from([b"\xd4\xc3\xb2\xa1", b"\x0a\x0d\x0d\x0a"]))
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_reader_on_random_bytes(
    tmp_path_factory: pytest.TempPathFactory, tail: bytes, magic: bytes
) -> None:
    path = tmp_path_factory.mktemp("r") / "random.pcap"
    header = magic + (
        b"\x02\x00\x04\x00" + bytes(12) + struct.pack("<I", 1) if magic[0] == 0xD4 else b""
    )
    path.write_bytes(header + tail)
    try:
        analysis = analyze_file(path)
    except CaptureError:
        return
    assert analysis.summary.packets >= 0
