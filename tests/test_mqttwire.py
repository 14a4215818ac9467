"""The native reader's wire codec on bytes: frames cut at every offset, many per chunk,
malformed and oversized frames. The encoders are checked against the traffic parser
(`sentinel.traffic.mqtt`), an independent reading of the same packets. Then the reader itself
against a scripted broker that sends what Mosquitto never would (bad frames, silence)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from sentinel.config import MqttConfig
from sentinel.decode import Reason
from sentinel.errors import ConfigError
from sentinel.inbox import Inbox
from sentinel.ingest import NativeReader
from sentinel.metrics import Metrics
from sentinel.mqttwire import (
    PINGREQ,
    ClientFramer,
    Received,
    encode_connect,
    encode_length,
    encode_pubacks,
    encode_publish,
    encode_subscribe,
)
from sentinel.traffic.mqtt import (
    Connect,
    Control,
    Framer,
    MalformedError,
    PacketType,
    Publish,
    Subscribe,
    remaining_length,
)

CONN = 7
CONNACK = b"\x20\x02\x00\x00"
PINGRESP = b"\xd0\x00"


def publish(topic: str, payload: bytes, qos: int = 1, pid: int | None = None) -> bytes:
    return encode_publish(topic, payload, qos, pid if qos else None)


def feed_all(framer: ClientFramer, chunks: list[bytes]) -> Received:
    total = Received()
    for chunk in chunks:
        got = framer.feed(chunk)
        total.messages += got.messages
        total.acks += got.acks
        total.controls += got.controls
        total.skipped += got.skipped
    return total


def stream() -> tuple[bytes, list[tuple[str, bytes]], list[tuple[int, int] | None]]:
    """A broker's stream: CONNACK, publishes of both QoS (one with a 2-byte length), a ping."""
    frames = [CONNACK]
    messages: list[tuple[str, bytes]] = []
    acks: list[tuple[int, int] | None] = []
    for i in range(1, 6):
        topic, payload = f"fleet/lyon/zone-{i}/video/cam-{i}/telemetry", b"x" * (i * 40)
        qos = i % 2
        frames.append(publish(topic, payload, qos, 300 + i))
        messages.append((topic, payload))
        acks.append((CONN, 300 + i) if qos else None)
    frames.append(PINGRESP)
    return b"".join(frames), messages, acks


@pytest.mark.parametrize("n", [0, 1, 2, 127, 128, 16_383, 16_384, 2_097_151, 268_435_455])
def test_remaining_length_round_trips_through_the_traffic_reader(n: int) -> None:
    encoded = encode_length(n)
    assert len(encoded) == 1 + (n >= 128) + (n >= 16_384) + (n >= 2_097_152)
    assert remaining_length(encoded, 0, len(encoded)) == (n, len(encoded))
    assert remaining_length(encoded, 0, len(encoded) - 1) is None  # cut: wait for more


def test_remaining_length_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_length(268_435_456)


def test_connect_and_subscribe_parse_back_as_sent() -> None:
    connect = encode_connect(
        "sentinel-agent", username="agent", password="s3cret", keepalive_s=30, clean_session=False
    )
    subscribe = encode_subscribe(1, [("fleet/+/+/+/+/telemetry", 1), ("fleet/+/+/+/+/status", 0)])
    packets = Framer(max_buffer=1 << 16).feed(connect + subscribe + PINGREQ)
    assert packets == [
        Connect(4, "sentinel-agent", "agent", True, 30, False, None),
        Subscribe(1, (("fleet/+/+/+/+/telemetry", 1), ("fleet/+/+/+/+/status", 0))),
        Control(PacketType.PINGREQ),
    ]
    anonymous = encode_connect("c", username=None, password=None, keepalive_s=5, clean_session=True)
    assert Framer().feed(anonymous) == [Connect(4, "c", None, False, 5, True, None)]


def test_publish_encodes_qos_and_packet_id() -> None:
    packets = Framer().feed(publish("a/b", b"hello", 1, 42) + publish("c", b"", 0))
    assert packets == [
        Publish("a/b", 1, False, False, 42, 5),
        Publish("c", 0, False, False, None, 0),
    ]
    with pytest.raises(ValueError, match="packet id"):
        encode_publish("a", b"", 1, None)
    with pytest.raises(ValueError, match="packet id"):
        encode_publish("a", b"", 2, 5)


def test_pubacks_are_back_to_back_frames() -> None:
    assert encode_pubacks([1, 258, 65535]) == (
        b"\x40\x02\x00\x01" + b"\x40\x02\x01\x02" + b"\x40\x02\xff\xff"
    )
    assert list(Framer().feed(encode_pubacks([1, 2]))) == [
        Control(PacketType.PUBACK),
        Control(PacketType.PUBACK),
    ]


def test_one_chunk_gives_every_frame_in_order() -> None:
    data, messages, acks = stream()
    got = ClientFramer(CONN, 4096).feed(data)
    assert got.messages == messages
    assert got.acks == acks
    assert got.controls == [(PacketType.CONNACK, b"\x00\x00"), (PacketType.PINGRESP, b"")]
    assert got.skipped == []


def test_split_at_every_offset_gives_the_same_frames() -> None:
    data, messages, acks = stream()
    for cut in range(len(data) + 1):
        framer = ClientFramer(CONN, 4096)
        got = feed_all(framer, [data[:cut], data[cut:]])
        assert (got.messages, got.acks, len(got.controls)) == (messages, acks, 2), cut
        assert framer.buffered == 0


def test_byte_by_byte_gives_the_same_frames() -> None:
    data, messages, acks = stream()
    framer = ClientFramer(CONN, 4096)
    got = feed_all(framer, [data[i : i + 1] for i in range(len(data))])
    assert (got.messages, got.acks) == (messages, acks)


def test_a_partial_frame_waits_in_the_buffer() -> None:
    frame = publish("t", b"p" * 100, 1, 9)
    framer = ClientFramer(CONN, 4096)
    assert framer.feed(frame[:50]).messages == []
    assert framer.buffered == 50
    assert framer.feed(frame[50:]).messages == [("t", b"p" * 100)]
    assert framer.buffered == 0


def test_topic_not_utf8_is_skipped_with_its_ack() -> None:
    bad = b"\x32" + encode_length(2 + 3 + 2 + 1) + b"\x00\x03a\xffb" + b"\x00\x05" + b"p"
    bad0 = b"\x30" + encode_length(2 + 2 + 1) + b"\x00\x02\xc3(" + b"p"
    got = ClientFramer(CONN, 4096).feed(bad + bad0 + publish("ok", b"p", 1, 6))
    assert got.skipped == [(Reason.BAD_TOPIC, 5), (Reason.BAD_TOPIC, None)]
    assert got.messages == [("ok", b"p")]
    assert got.acks == [(CONN, 6)]


def test_oversized_publish_is_skipped_without_buffering_it() -> None:
    big = publish("big/topic", b"B" * 10_000, 1, 77)
    after = publish("next", b"n", 1, 78)
    for cut in (3, 20, 5_000, len(big), len(big) + 2):
        framer = ClientFramer(CONN, 1_000)
        data = big + after
        first = framer.feed(data[:cut])
        assert framer.buffered <= 1_000 + 5
        second = framer.feed(data[cut:])
        got = first.skipped + second.skipped
        assert got == [(Reason.OVERSIZED, 77)], cut
        assert first.messages + second.messages == [("next", b"n")], cut


def test_oversized_publish_in_many_small_chunks() -> None:
    big = publish("big", b"B" * 50_000, 0)
    framer = ClientFramer(CONN, 1_000)
    skipped = []
    for i in range(0, len(big), 700):
        got = framer.feed(big[i : i + 700])
        skipped += got.skipped
        assert got.messages == []
        assert framer.buffered <= 1_005
    assert skipped == [(Reason.OVERSIZED, None)]
    assert framer.feed(publish("x", b"1", 0)).messages == [("x", b"1")]


def test_oversized_control_packet_is_refused() -> None:
    frame = b"\x90" + encode_length(5_000)
    with pytest.raises(MalformedError) as err:
        ClientFramer(CONN, 1_000).feed(frame)
    assert err.value.reason == "oversized"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x30\xff\xff\xff\xff\x01", "bad_remaining_length"),
        (b"\x10\x00", "unknown_type"),  # CONNECT: a broker never sends it
        (b"\xc0\x00", "unknown_type"),  # PINGREQ
        (b"\x80\x00", "unknown_type"),  # SUBSCRIBE
        (b"\x00\x00", "unknown_type"),  # type 0
        (b"\xf0\x00", "unknown_type"),  # AUTH (MQTT 5)
        (b"\x36\x04\x00\x01ax", "invalid_qos"),
        (b"\x30\x01\x00", "truncated"),  # no room for the topic length
        (b"\x30\x03\x00\x05a", "truncated"),  # topic longer than the packet
        (b"\x32\x04\x00\x02ab", "truncated"),  # QoS 1 without a packet id
        (b"\x32\x06\x00\x02ab\x00\x00", "protocol_violation"),  # packet id 0
    ],
)
def test_malformed_frames_raise_with_a_bounded_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedError) as err:
        ClientFramer(CONN, 4096).feed(CONNACK + data)
    assert err.value.reason == reason


def test_acks_of_a_packet_use_the_framers_connection() -> None:
    got = ClientFramer(12, 4096).feed(publish("t", b"", 1, 1) + publish("t", b"", 1, 65535))
    assert got.acks == [(12, 1), (12, 65535)]


async def test_a_chunk_goes_to_the_inbox_in_one_call_that_pauses_above_high_water() -> None:
    inbox = Inbox(high_water=4, batch_max=100)
    pauses: list[int] = []
    inbox.pause = lambda: pauses.append(len(inbox))
    data, messages, acks = stream()
    got = ClientFramer(CONN, 4096).feed(data)
    inbox.extend(got.messages[:3], got.acks[:3])
    assert pauses == []
    inbox.extend(got.messages[3:], got.acks[3:])
    assert pauses == [5]  # one check per chunk, not per message
    delivery = await inbox.take(0)
    assert (delivery.messages, delivery.acks) == (messages, acks)
    with pytest.raises(ValueError, match="one ack"):
        inbox.extend(messages, acks[:-1])


# --- the native reader against a broken or hostile broker ---------------------------------
# Mosquitto never sends bad frames or goes silent on purpose, so these run against a small
# scripted TCP server: each connection gets the next script's bytes after the CONNECT.

SUBACK = b"\x90\x03\x00\x01\x01"
PASSWORD = "s3cret-pw-7f3a"


class ScriptedBroker:
    def __init__(self, scripts: list[bytes]) -> None:
        self.scripts = scripts
        self.connections = 0
        self.received: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script = self.scripts[min(self.connections, len(self.scripts) - 1)]
        self.connections += 1
        self.received.append(await reader.read(4096))  # the CONNECT (and maybe more)
        writer.write(script)
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                self.received.append(data)
        writer.close()

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def reader_for(port: int, metrics: Metrics, **mqtt: Any) -> NativeReader:
    cfg = MqttConfig(
        url=f"mqtt://127.0.0.1:{port}",
        password=PASSWORD,
        reconnect_min_s=0.05,
        reconnect_max_s=0.1,
        client="native",
        **mqtt,
    )
    return NativeReader(cfg, ["fleet/#"], Inbox(1000, 100), metrics)


async def run_until(reader: NativeReader, done: Callable[[], bool], within_s: float) -> None:
    task = asyncio.create_task(reader.run())
    try:
        async with asyncio.timeout(within_s):
            while not done():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    finally:
        reader.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b"\x30\xff\xff\xff\xff\x01", "bad_remaining_length"),
        (b"\x90" + encode_length(50_000_000), "oversized"),
        (b"\x10\x00", "unknown_type"),
        (b"\x32\x04\x00\x02ab", "truncated"),
    ],
)
async def test_bad_frames_close_the_connection_and_the_reader_reconnects(
    bad: bytes, reason: str
) -> None:
    good = publish("fleet/a", b"before", 1, 3)
    broker = ScriptedBroker([CONNACK + SUBACK + good + bad])
    metrics = Metrics()
    async with broker as port:
        reader = reader_for(port, metrics)
        await run_until(reader, lambda: broker.connections >= 3, 10)
    assert (metrics.registry.get_sample_value("sentinel_mqtt_reconnects_total") or 0) >= 2
    # Nothing of a chunk with a bad frame is handed on: unacked, the broker sends it again.
    assert len(reader._inbox) == 0
    # What the agent logs as mqtt_disconnected (the log itself is cached by earlier tests'
    # logging setup, so the reader's own record of it is checked).
    assert f"bad frame from the broker ({reason})" in reader.last_error


async def test_a_refused_connect_is_logged_and_retried() -> None:
    broker = ScriptedBroker([b"\x20\x02\x00\x04"])  # bad user name or password
    async with broker as port:
        reader = reader_for(port, Metrics())
        await run_until(reader, lambda: broker.connections >= 3, 10)
        assert not reader.connected.is_set()
    out = reader.last_error
    assert "the broker refused the connection: bad user name or password" in out
    assert PASSWORD.encode() in broker.received[0]  # the password went in the CONNECT
    assert PASSWORD not in out  # and never into the log


async def test_a_silent_broker_is_dropped_after_one_and_a_half_keepalives() -> None:
    broker = ScriptedBroker([CONNACK + SUBACK])  # then nothing, not even PINGRESP
    async with broker as port:
        reader = reader_for(port, Metrics(), keepalive_s=5)
        started = asyncio.get_running_loop().time()
        await run_until(reader, lambda: broker.connections >= 2, 15)
        elapsed = asyncio.get_running_loop().time() - started
    assert 7.5 <= elapsed < 12
    assert any(PINGREQ in chunk for chunk in broker.received)  # it asked first


async def test_skipped_messages_are_counted_and_acked_at_once() -> None:
    bad_topic = b"\x32" + encode_length(2 + 3 + 2 + 1) + b"\x00\x03a\xffb" + b"\x00\x05" + b"p"
    broker = ScriptedBroker([CONNACK + SUBACK + bad_topic + publish("fleet/ok", b"p", 1, 6)])
    metrics = Metrics()
    async with broker as port:
        reader = reader_for(port, metrics)
        inbox = reader._inbox
        await run_until(reader, lambda: b"\x40\x02\x00\x05" in b"".join(broker.received), 5)
    assert metrics.registry.get_sample_value("sentinel_rejects_total", {"reason": "bad_topic"}) == 1
    assert (await inbox.take(0)).messages == [("fleet/ok", b"p")]
    assert b"\x40\x02\x00\x06" not in b"".join(broker.received)  # not durable: not acked


def test_qos_2_is_refused_with_a_config_error() -> None:
    with pytest.raises(ValidationError, match="qos = 2"):
        MqttConfig(qos=2, client="native")  # when the file is loaded
    assert MqttConfig(qos=2, client="paho").qos == 2
    unchecked = MqttConfig.model_construct(qos=2, client="native")
    with pytest.raises(ConfigError, match="qos = 2"):  # and by the reader itself
        NativeReader(unchecked, ["fleet/#"], Inbox(10, 10), Metrics())
