"""Live traffic sources: Mosquitto's log (parsed, followed), $SYS gauges, the bridge to the
agent's alerts, the [traffic] config, and live capture's privileges and loopback handling."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from typer.testing import CliRunner

from detectors.model import DeviceRef, Record
from sentinel.cli import app as cli_app
from sentinel.config import Config, TrafficSourcesConfig, load_config
from sentinel.errors import ConfigError
from sentinel.metrics import Metrics
from sentinel.traffic import Analyzer, TrafficConfig
from sentinel.traffic.alerts import TrafficAlert
from sentinel.traffic.brokerlog import BrokerLogEvents, LogFollower, split_stamp
from sentinel.traffic.cli import app as pcap_app
from sentinel.traffic.flows import FlowFeatures
from sentinel.traffic.live import (
    TRAFFIC_KIND,
    AlertBridge,
    TrafficMetrics,
    feature_record,
    load_devices,
    printable,
    traffic_tasks,
)
from sentinel.traffic.mqtt import Connack, Connect, Malformed, Subscribe
from sentinel.traffic.packet import ip_packed
from sentinel.traffic.streams import Endpoint, MqttEvent
from sentinel.traffic.systopics import BrokerGauges

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REPO = Path(__file__).resolve().parent.parent

# Real lines from the local stack's .stack/logs/mosquitto.log (Mosquitto 2.0.11, log_type error
# warning notice information subscribe unsubscribe, connection_messages true,
# log_timestamp_format %Y-%m-%dT%H:%M:%S), in the order the broker wrote them. The client
# "gen-ce9757 sp ace" has spaces in its id on purpose.
REAL = """\
=== 2026-11-29T00:18:21Z stack: starting mosquitto
2026-11-29T00:18:22: mosquitto version 2.0.11 starting
2026-11-29T00:18:22: Config loaded from /work/main/.stack/mosquitto/mosquitto.conf.
2026-11-29T01:02:54: New connection from 127.0.0.1:50203 on port 18830.
2026-11-29T01:02:54: New client connected from 127.0.0.1:50203 as agent-49b9cd4346 (p2, c0, k30, u'sentinel-agent').
2026-11-29T01:02:54: agent-49b9cd4346 1 fleet/test-6a72a0b23a/+/+/+/+/telemetry
2026-11-29T01:02:55: Saving in-memory database to /work/main/.stack/mosquitto/data//mosquitto.db.
2026-11-29T01:06:32: New connection from 127.0.0.1:53268 on port 18830.
2026-11-29T01:06:32: Client <unknown> closed its connection.
2026-11-29T01:06:34: New connection from 127.0.0.1:37081 on port 18830.
2026-11-29T01:06:34: New client connected from 127.0.0.1:37081 as gen-ce9757 sp ace (p2, c1, k60, u'probe-dev-1').
2026-11-29T01:06:34: gen-ce9757 sp ace 0 $SYS/#
2026-11-29T01:06:34: gen-ce9757 sp ace 1 fleet/t/z/lighting/probe-dev-2/command
2026-11-29T01:06:34: gen-ce9757 sp ace 2 fleet/+/+/+/probe-dev-1/command
2026-11-29T01:06:35: gen-ce9757 sp ace $SYS/#
2026-11-29T01:06:35: New connection from 127.0.0.1:46635 on port 18830.
2026-11-29T01:06:35: Client gen-ce9757 sp ace already connected, closing old connection.
2026-11-29T01:06:35: New client connected from 127.0.0.1:46635 as gen-ce9757 sp ace (p2, c1, k0, u'probe-dev-1').
2026-11-29T01:06:36: New connection from 127.0.0.1:42379 on port 18830.
2026-11-29T01:06:36: New client connected from 127.0.0.1:42379 as gen5-ce9757 (p5, c1, k7200, u'probe-dev-2').
2026-11-29T01:06:36: New connection from 127.0.0.1:52623 on port 18830.
2026-11-29T01:06:36: Client <unknown> disconnected, not authorised.
2026-11-29T01:06:36: New connection from 127.0.0.1:59218 on port 18830.
2026-11-29T01:06:36: Client <unknown> disconnected due to protocol error.
2026-11-29T01:06:37: Client gen-ce9757 sp ace disconnected.
2026-11-29T01:06:37: gen-ce9757 sp ace 0 #
2026-11-29T01:12:31: New client connected from 127.0.0.1:49246 as idle-ka1 (p2, c0, k1, u'probe-dev-1').
2026-11-29T01:12:34: Client idle-ka1 closed its connection.
2026-11-29T01:18:47: Client connection from 127.0.0.1 failed: error:0A000126:SSL routines::unexpected eof while reading.
"""  # noqa: E501
# Formats of other lines, from the strings of the same mosquitto binary (not seen in that log).
FROM_BINARY = [
    "1764374400: Client slow-1 has exceeded timeout, disconnecting.",
    "1764374400: Client x disconnected due to malformed packet.",
    "1764374400: Client x disconnected: The connection was lost.",
    "1764374400: New client connected from ::1:5000 as anon (p2, c1, k60).",
    "1764374400: New bridge connected from 10.0.0.9:4000 as br (p2, c0, k60, u'bridge').",
    "1764374400: Outgoing messages are being dropped for client slow-1.",
    "1764374400: Received PUBLISH from good-1 (d0, q0, r0, m0, 'a', ... (1 bytes))",
]


def events_of(text: str, parser: BrokerLogEvents | None = None) -> list[MqttEvent]:
    parser = parser or BrokerLogEvents()
    return [ev for line in text.splitlines() for ev in parser.feed(line, 0.0)]


# --- parsing --------------------------------------------------------------------------------


def test_real_lines_become_mqtt_events() -> None:
    parser = BrokerLogEvents()
    evs = events_of(REAL, parser)
    connects = [e for e in evs if isinstance(e.packet, Connect)]
    assert [(e.client_id, e.username, e.client) for e in connects] == [
        ("agent-49b9cd4346", "sentinel-agent", Endpoint("127.0.0.1", 50203)),
        ("gen-ce9757 sp ace", "probe-dev-1", Endpoint("127.0.0.1", 37081)),
        ("gen-ce9757 sp ace", "probe-dev-1", Endpoint("127.0.0.1", 46635)),
        ("gen5-ce9757", "probe-dev-2", Endpoint("127.0.0.1", 42379)),
        ("idle-ka1", "probe-dev-1", Endpoint("127.0.0.1", 49246)),
    ]
    first = connects[0].packet
    assert isinstance(first, Connect)
    assert (first.level, first.clean_session, first.keep_alive) == (4, False, 30)
    v5 = connects[3].packet
    assert isinstance(v5, Connect)
    assert (v5.level, v5.clean_session, v5.keep_alive) == (5, True, 7200)
    assert connects[2].packet.keep_alive == 0  # type: ignore[union-attr]
    assert connects[0].dst == Endpoint("broker", 18830)
    accepted = [e for e in evs if isinstance(e.packet, Connack) and not e.packet.refused]
    assert len(accepted) == 5
    subs = [(e.client_id, e.username, e.packet) for e in evs if isinstance(e.packet, Subscribe)]
    agent, gen = ("agent-49b9cd4346", "sentinel-agent"), ("gen-ce9757 sp ace", "probe-dev-1")
    assert subs == [
        (*agent, Subscribe(0, (("fleet/test-6a72a0b23a/+/+/+/+/telemetry", 1),))),
        (*gen, Subscribe(0, (("$SYS/#", 0),))),
        (*gen, Subscribe(0, (("fleet/t/z/lighting/probe-dev-2/command", 1),))),
        (*gen, Subscribe(0, (("fleet/+/+/+/probe-dev-1/command", 2),))),
    ]
    # The refused login is put on the connection opened just before it; so is the garbage.
    refused = [e for e in evs if isinstance(e.packet, Connack) and e.packet.refused]
    assert [(e.client, e.client_id, e.username) for e in refused] == [
        (Endpoint("127.0.0.1", 52623), None, None)
    ]
    malformed = [e for e in evs if isinstance(e.packet, Malformed)]
    assert [(e.src, e.packet.reason) for e in malformed] == [  # type: ignore[union-attr]
        (Endpoint("127.0.0.1", 59218), "protocol_violation")
    ]
    assert dict(parser.counts) == {
        "broker_restart": 1,
        "ignored": 4,  # the stack's marker, "Config loaded", "Saving in-memory ...", TLS
        "connection": 7,
        "connected": 5,
        "subscribe": 4,
        "unsubscribe": 1,
        "takeover": 1,
        "refused": 1,
        "disconnect": 4,  # closed x2, protocol error, disconnected
        "no_session": 1,  # "gen-ce9757 sp ace 0 #" after its disconnect: not checked
    }
    assert parser.sessions == 2  # agent and gen5 are still connected


def test_lines_from_the_binarys_formats() -> None:
    parser = BrokerLogEvents()
    evs = events_of("\n".join(FROM_BINARY), parser)
    connects = [e for e in evs if isinstance(e.packet, Connect)]
    assert [(e.client, e.client_id, e.username) for e in connects] == [
        (Endpoint("::1", 5000), "anon", None),
        (Endpoint("10.0.0.9", 4000), "br", "bridge"),
    ]
    assert parser.counts["disconnect"] == 3
    assert parser.counts["no_session"] == 1  # the PUBLISH of a client not seen logging in
    assert parser.counts["unrecognised"] == 0
    publish = events_of(
        "1764374401: New client connected from 10.0.0.5:1 as good-1 (p2, c1, k60, u'dev').\n"
        + FROM_BINARY[-1]
    )[-1]
    assert publish.packet.topic == "a"  # type: ignore[union-attr]
    assert publish.packet.payload_size == 1  # type: ignore[union-attr]


def test_timestamps() -> None:
    assert split_stamp("1764374400: x") == (1764374400.0, "x")
    assert split_stamp("2026-11-29T01:02:03Z: x") == (1795914123.0, "x")
    assert split_stamp("2026-11-29T02:02:03+01:00: x").ts == 1795914123.0
    naive = split_stamp("2026-11-29 01:02:03: x")
    assert naive.message == "x"
    assert naive.ts == time.mktime((2026, 11, 29, 1, 2, 3, 0, 0, -1))  # local time
    assert split_stamp("New connection from") == (None, "New connection from")
    assert split_stamp("9999-99-99T99:99:99: x").ts is None
    parser = BrokerLogEvents()
    parser.feed("1764374400: New connection from 10.0.0.1:1 on port 1883.", 5.0)
    # No stamp: the reading time; never earlier than the line before.
    ev = parser.feed("Client <unknown> disconnected, not authorised.", 5.0)
    assert ev[0].ts == 1764374400.0


def test_a_refusal_goes_to_a_fresh_connection_not_a_silent_one() -> None:
    parser = BrokerLogEvents()
    parser.feed("1764374500: New connection from 10.9.9.9:1 on port 1883.", 0)  # silent since
    for i in range(3):
        parser.feed(f"1764374600: New connection from 10.0.0.{i}:5 on port 1883.", 0)
    owners = [
        parser.feed("1764374600: Client <unknown> disconnected, not authorised.", 0)[0].client.ip
        for _ in range(3)
    ]
    assert owners == ["10.0.0.0", "10.0.0.1", "10.0.0.2"]
    # Nothing fresh: the newest pending connection.
    assert parser.feed("1764374700: Client <unknown> disconnected, not authorised.", 0)[
        0
    ].client.ip == ("10.9.9.9")
    assert parser.feed("1764374700: Client <unknown> disconnected, not authorised.", 0)[
        0
    ].client == (Endpoint("unknown", 0))


def test_a_client_id_that_reads_like_another_line() -> None:
    parser = BrokerLogEvents()
    parser.feed(
        "1764374401: New client connected from 10.0.0.1:1 as Client (p2, c1, k60, u'dev-1').", 0
    )
    evs = parser.feed("1764374401: Client 0 #", 0)
    assert [e.packet for e in evs] == [Subscribe(0, (("#", 0),))]
    odd = "x (p2, c1, k60, u'op')"  # a client id mimicking the tail of the line
    line = f"1764374401: New client connected from 10.0.0.2:2 as {odd} (p2, c1, k60, u'dev-2')."
    connect = parser.feed(line, 0)[0]
    assert (connect.client_id, connect.username) == (odd, "dev-2")


def test_long_crafted_lines_parse_in_linear_time() -> None:
    """Client ids and topics full of the patterns' own fixed texts: no regex backtracking."""
    parser = BrokerLogEvents()
    parser.feed("1764374400: New client connected from 1.2.3.4:5 as c (p2, c1, k6, u'u').", 0)
    n = 20_000
    lines = [
        "New client connected from 1.2.3.4:5 as " + "x:1 as (p2, c1, k6, u'" * n,
        "Received PUBLISH from " + "c (d0, q0, r0, m0, '" * n,
        "New connection from " + "1:2 on port 3. " * n,
        "Client " + " disconnected: " * n,
        "c " + "0 " * n,
        "c 0 " + "', ... (" * n,
    ]
    for line in lines:
        started = time.perf_counter()
        parser.feed("1764374401: " + line, 0)
        assert time.perf_counter() - started < 0.5, line[:60]


# Fragments of real lines, to splice into random ones.
_PIECES = [
    "New connection from ",
    "New client connected from ",
    " as ",
    " (p2, c1, k60, u'",
    "').",
    "Client ",
    "<unknown>",
    " disconnected, not authorised.",
    " disconnected.",
    " 0 #",
    " 1 ",
    "127.0.0.1:",
    ":99999999999999999999",
    " on port 1883.",
    "Received PUBLISH from ",
    "', ... (",
    " bytes))",
    "2026-11-29T01:06:34: ",
    "17643744000000: ",
    "\x00",
    "\ud800",
]


@FUZZ
@given(
    st.lists(st.one_of(st.text(max_size=40), st.sampled_from(_PIECES)).map("".join), max_size=30)
)
def test_random_lines_never_crash(lines: list[str]) -> None:
    parser = BrokerLogEvents()
    analyzer = Analyzer(TrafficConfig(brute_force_failures=1), keep_alerts=False)
    for line in [
        "1764374401: New client connected from 1.2.3.4:5 as c (p2, c1, k60, u'u').",
        *lines,
    ]:
        for ev in parser.feed(line, 1.0):
            analyzer.event(ev)
    assert sum(parser.counts.values()) == len(lines) + 1


# --- following the file ----------------------------------------------------------------------


def test_follower_starts_at_the_end_and_reads_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "mosquitto.log"
    path.write_text("old line\n")
    follower = LogFollower(path)
    assert follower.poll() == []
    with path.open("a") as fh:
        fh.write("one\ntw")
        fh.flush()
        assert follower.poll() == ["one"]
        fh.write("o\n\xe9t\xe9\n")
    assert follower.poll() == ["two", "été"]
    assert LogFollower(path, from_start=True).poll() == ["old line", "one", "two", "été"]


def test_follower_survives_rotation_truncation_and_absence(tmp_path: Path) -> None:
    path = tmp_path / "mosquitto.log"
    follower = LogFollower(path)
    assert follower.poll() == []
    assert follower.error is not None
    assert "No such file" in follower.error
    path.write_text("first\n")  # created after we started: read from its start
    assert follower.poll() == ["first"]
    with path.open("a") as fh:
        fh.write("last of old\npartial")
    path.rename(tmp_path / "mosquitto.log.1")  # logrotate's create mode
    assert follower.poll() == ["last of old"]  # the old file, still open
    path.write_text("new 1\n")
    assert follower.poll() == ["partial", "new 1"]
    assert follower.rotations == 1
    path.write_text("")  # copytruncate
    assert follower.poll() == []
    with path.open("a") as fh:
        fh.write("after truncate\n")
    assert follower.poll() == ["after truncate"]
    assert follower.truncations == 1
    assert follower.error is None


def test_follower_bounds_lines_and_reads(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"")
    follower = LogFollower(path, max_line_bytes=256, max_read_bytes=1024)
    follower.poll()
    with path.open("ab") as fh:
        fh.write(b"a" * 1000 + b"\nshort\n" + b"b" * 300)
        fh.flush()
        lines = follower.poll()
        while follower.backlog:
            lines += follower.poll()
        assert lines == ["a" * 256, "short", "b" * 256]
        fh.write(b"b" * 5000 + b"\nafter\n\xff\xfe\n")
    lines = []
    while not lines or follower.backlog:
        lines += follower.poll()
    assert lines == ["after", "\ufffd\ufffd"]
    assert follower.truncated_lines == 2


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_follower_never_crashes_and_bounds_lines(chunks: list[bytes]) -> None:
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log"
        path.write_bytes(b"")
        follower = LogFollower(path, max_line_bytes=256, max_read_bytes=512)
        follower.poll()
        out: list[str] = []
        with path.open("ab") as fh:
            for chunk in chunks:
                fh.write(chunk)
                fh.flush()
                out += follower.poll()
        while follower.backlog:
            out += follower.poll()
        assert all(len(line.encode("utf-8", "surrogateescape")) <= 3 * 256 for line in out)
        assert len(out) <= b"".join(chunks).count(b"\n") + 2 * len(chunks)
        follower.close()


# --- detections from the log, through the same Analyzer --------------------------------------


def _alerts(lines: list[str], **cfg: Any) -> list[TrafficAlert]:
    found: dict[int, TrafficAlert] = {}

    def collect(alert: TrafficAlert, _opened: bool) -> None:
        found[id(alert)] = alert

    analyzer = Analyzer(TrafficConfig(**cfg), keep_alerts=False, on_alert=collect)
    parser = BrokerLogEvents()
    for line in lines:
        for ev in parser.feed(line, 0.0):
            analyzer.event(ev)
    return list(found.values())


def test_log_detections() -> None:
    lines = []
    for i in range(6):  # refused logins from one address
        lines += [
            f"1764374500: New connection from 10.0.0.66:{4000 + i} on port 1883.",
            "1764374500: Client <unknown> disconnected, not authorised.",
        ]
    for i in range(3):  # the same client id from three addresses
        lines.append(
            f"1764374501: New client connected from 10.0.1.{i}:1 as twin (p2, c1, k60, u'dev-1')."
        )
    lines += [
        "1764374502: New client connected from 10.0.2.1:1 as snoop (p2, c1, k60, u'dev-2').",
        "1764374502: snoop 0 #",
        "1764374502: snoop 0 $SYS/broker/clients/connected",
        "1764374502: snoop 1 fleet/lyon/z/video/dev-3/command",
        "1764374502: snoop 1 fleet/lyon/z/video/dev-2/command",  # its own: fine
        "1764374502: New client connected from 10.0.2.2:1 as op (p5, c1, k60, u'sentinel-agent').",
        "1764374502: op 1 #",  # operators may
    ]
    lines += [  # SlowITe: connections without keep-alive
        f"1764374503: New client connected from 10.0.3.3:{i} as slow-{i} (p2, c1, k0, u'dev-4')."
        for i in range(5)
    ]
    lines += [  # reconnect storm
        f"1764374504: New client connected from 10.0.4.4:{i} as flappy (p2, c1, k60, u'dev-5')."
        for i in range(6)
    ]
    alerts = _alerts(
        lines,
        brute_force_failures=5,
        slowite_connections=5,
        reconnects=6,
        client_id_ips=3,
    )
    got = {(a.kind, a.subject, a.count) for a in alerts}
    assert got == {
        ("brute_force_ip", "10.0.0.66", 6),  # opened at 5 refusals, extended by the 6th
        ("client_id_multi_ip", "twin", 3),
        ("forbidden_subscription", "snoop", 3),  # #, $SYS and another device's topic
        ("slowite", "10.0.3.3", 5),
        ("reconnect_storm", "flappy", 6),
    }
    snoop = next(a for a in alerts if a.kind == "forbidden_subscription")
    assert snoop.evidence["reason"] == "other_devices"  # the last hit's evidence


# --- the bridge to the agent's alerts ----------------------------------------------------------


def _alert(kind: str = "forbidden_subscription", subject: str = "snoop", **kw: Any) -> TrafficAlert:
    values: dict[str, Any] = {
        "kind": kind,
        "severity": "critical",
        "subject": subject,
        "src": "10.0.0.1",
        "device": None,
        "first": 100.0,
        "last": 101.0,
        "count": 1,
        "evidence": {"filters": "#"},
    }
    values.update(kw)
    return TrafficAlert(**values)


def test_bridge_fires_once_then_resolves_after_quiet() -> None:
    cfg = TrafficSourcesConfig(resolve_after_s=10, tenant="t1", zone="z1")
    bridge = AlertBridge(cfg)
    alert = _alert()
    bridge.touch(alert, "broker_log")
    [(source, [t])] = bridge.flush(0.0, 1000.0)
    assert (source.name, source.alertname, source.severity) == (
        "traffic-forbidden-subscription",
        "TrafficForbiddenSubscription",
        "critical",
    )
    assert t.firing
    assert t.ts == 100.0
    assert (t.device.tenant, t.device.zone, t.device.kind) == ("t1", "z1", TRAFFIC_KIND)
    assert re.fullmatch(r"_s[0-9a-f]{3}", t.device.device_id)
    assert t.summary == (
        "Forbidden subscription by client snoop (1 event, last from 10.0.0.1, in the broker log)"
    )
    assert t.evidence["subject"] == "snoop"
    assert t.evidence["origin"] == "broker_log"
    bridge.touch(alert, "broker_log")  # extended: nothing new
    assert bridge.flush(5.0, 1005.0) == []
    assert bridge.flush(14.9, 1014.9) == []
    [(_, [end])] = bridge.flush(15.0, 1015.0)
    assert (end.firing, end.device, end.ts) == (False, t.device, 1015.0)
    bridge.touch(alert, "capture")
    assert [tr.firing for _, trs in bridge.flush(16.0, 1016.0) for tr in trs] == [True]


def test_bridge_labels_stay_bounded_and_clean() -> None:
    bridge = AlertBridge(TrafficSourcesConfig(subject_buckets=8))
    nasty = "evil\n\x1b[31m" + "x" * 10_000
    for i in range(500):
        bridge.touch(_alert(subject=f"{nasty}{i}", evidence={"filters": nasty}), "capture")
    flushed = bridge.flush(0.0, 0.0)
    transitions = [t for _, ts in flushed for t in ts]
    assert len(transitions) == 8  # one per bucket
    assert {t.device.device_id for t in transitions} <= {f"_s{i:03x}" for i in range(8)}
    for t in transitions:
        assert (t.device.tenant, t.device.zone) == ("_broker", "_broker")
        assert len(t.summary) < 250
        assert t.summary.isprintable()
        filters = t.evidence["filters"]
        assert isinstance(filters, str)
        assert len(filters) <= 257
        assert filters.isprintable()
    device = DeviceRef("lyon", "part-dieu", "video", "cam-1")
    bridge.touch(_alert(kind="telnet_ssh_scan", device=device), "capture")
    [(source, [t])] = bridge.flush(1.0, 1.0)
    assert (source.alertname, t.device) == ("TrafficTelnetSshScan", device)
    assert printable("a\tb", 10) == "a?b"


def test_feature_records_are_prefixed() -> None:
    device = DeviceRef("lyon", "part-dieu", "video", "cam-1")
    features = FlowFeatures(0, 60, "10.0.0.1", device, 10, 20, 1, 2, 1, 1, 1, 0, 0, 0, ("a.b",))
    record = feature_record(features)
    assert isinstance(record, Record)
    assert record.ts == 60
    assert record.metrics["net_bytes_out"] == 10.0
    assert record.metrics["net_dns_names"] == 1.0
    unknown = FlowFeatures(0, 60, "10.0.0.9", None, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, ())
    assert feature_record(unknown) is None


def test_live_analyzer_closes_windows_on_the_clock_and_forgets_quiet_alerts() -> None:
    from sentinel.traffic.synth import Capture  # noqa: PLC0415

    seen: list[FlowFeatures] = []
    analyzer = Analyzer(keep_features=False, keep_alerts=False, on_features=seen.append)
    cap = Capture()
    cap.udp(120.5, "10.0.0.1", 5000, "10.0.0.2", 53, b"x")
    for ts, frame in cap.frames:
        analyzer.feed(ts, 1, frame)  # Ethernet
    analyzer.tick(150.0)
    assert seen == []
    analyzer.tick(180.0)  # the window [120, 180) is over, though no packet says so
    assert [(f.ip, f.start, f.end) for f in seen] == [
        ("10.0.0.1", 120.0, 180.0),
        ("10.0.0.2", 120.0, 180.0),
    ]
    parser = BrokerLogEvents()
    for i in range(10):
        parser.feed(f"1764374600: New connection from 10.0.0.7:{i} on port 1883.", 0)
        for ev in parser.feed("1764374600: Client <unknown> disconnected, not authorised.", 0):
            analyzer.event(ev)
    log = analyzer._log
    assert log.open_alerts == 1
    assert log.alerts == []  # live: not kept
    analyzer.tick(1764374600.0 + 61)
    assert log.open_alerts == 0


# --- $SYS -------------------------------------------------------------------------------------

# Real values from the local stack's broker (mosquitto_sub -t '$SYS/#' -v), and two the
# binary publishes when something is dropped.
SYS_SAMPLE = [
    ("$SYS/broker/bytes/received", b"14000229"),
    ("$SYS/broker/clients/connected", b"1"),
    ("$SYS/broker/clients/maximum", b"39"),
    ("$SYS/broker/load/bytes/sent/1min", b"4408273.58"),
    ("$SYS/broker/load/connections/5min", b"6.39"),
    ("$SYS/broker/load/messages/received/1min", b"17129.61"),
    ("$SYS/broker/load/publish/sent/15min", b"2161.56"),
    ("$SYS/broker/messages/sent", b"73196"),
    ("$SYS/broker/retained messages/count", b"439"),
    ("$SYS/broker/uptime", b"3021 seconds"),
    ("$SYS/broker/version", b"mosquitto version 2.0.11"),
    ("$SYS/broker/load/publish/dropped/1min", b"30"),
    ("$SYS/broker/publish/messages/dropped", b"12"),
]


def test_sys_topics_become_bounded_gauges() -> None:
    registry = CollectorRegistry()
    gauges = BrokerGauges(registry)
    for topic, payload in SYS_SAMPLE:
        gauges.update(topic, payload, 1000.0)
    assert gauges.updates == 12
    assert gauges.ignored == 1  # the version
    assert not gauges.update("$SYS/broker/clients/evil-label", b"1", 0)
    assert not gauges.update("$SYS/broker/load/messages/x/1min", b"1", 0)
    assert not gauges.update("$SYS/broker/clients/connected", b"NaN", 0)
    assert not gauges.update("$SYS/broker/clients/connected", b"", 0)
    assert not gauges.update("fleet/x", b"1", 0)
    text = generate_latest(registry).decode()
    assert 'sentinel_broker_clients{state="connected"} 1.0' in text
    assert 'sentinel_broker_clients{state="maximum"} 39.0' in text
    assert 'sentinel_broker_bytes_per_second{direction="sent",window="1min"} 73471.' in text
    assert 'sentinel_broker_messages_per_second{direction="received",window="1min"}' in text
    assert 'sentinel_broker_publish_per_second{direction="dropped",window="1min"} 0.5' in text
    assert 'sentinel_broker_connections_per_second{window="5min"}' in text
    assert 'sentinel_broker_bytes{direction="received"} 1.4000229e+07' in text
    assert "sentinel_broker_publish_dropped_messages 12.0" in text
    assert "sentinel_broker_retained_messages 439.0" in text
    assert "sentinel_broker_uptime_seconds 3021.0" in text
    assert "sentinel_broker_sys_last_update_timestamp_seconds 1000.0" in text


# --- configuration and wiring -------------------------------------------------------------------


def test_traffic_section_is_off_by_default_and_validated(tmp_path: Path) -> None:
    assert not Config().traffic.enabled
    assert traffic_tasks(Config(), None, Metrics()) == []  # type: ignore[arg-type]
    toml = tmp_path / "sentinel.toml"
    toml.write_text(
        '[traffic]\nbroker_log_file = "logs/mosquitto.log"\nsys_topics = true\n'
        'brute_force_failures = 5\ntenant = "_soc"\n'
    )
    cfg = load_config(toml).traffic
    assert cfg.broker_log_file == tmp_path / "logs" / "mosquitto.log"  # relative to the file
    assert (cfg.brute_force_failures, cfg.tenant, cfg.enabled) == (5, "_soc", True)
    assert isinstance(cfg, TrafficConfig)  # the analyzer takes it as it is
    toml.write_text('[traffic]\ntenant = "a,b=c"\nwindow_s = 0\n')
    with pytest.raises(ConfigError) as err:
        load_config(toml)
    assert {p.split(":")[0] for p in err.value.problems} == {"traffic.tenant", "traffic.window_s"}
    toml.write_text('[traffic]\ninventory_file = "missing.json"\n')
    with pytest.raises(ConfigError, match=r"traffic\.inventory_file: .*cannot read"):
        load_config(toml)
    toml.write_text('[traffic]\ncapture_iface = "../../etc"\n')
    with pytest.raises(ConfigError, match=r"traffic\.capture_iface"):
        load_config(toml)


def test_pcap_analyze_reads_the_agents_traffic_table(tmp_path: Path) -> None:
    from sentinel.traffic.synth import Capture  # noqa: PLC0415

    cap = tmp_path / "x.pcap"
    Capture().write(cap)
    toml = tmp_path / "sentinel.toml"
    toml.write_text('[traffic]\nbroker_log_file = "/var/log/mosquitto.log"\nwindow_s = 30\n')
    result = CliRunner().invoke(pcap_app, ["analyze", str(cap), "--config", str(toml), "--json"])
    assert result.exit_code == 0, result.output


def test_inventory_devices_are_checked(tmp_path: Path) -> None:
    inv = tmp_path / "inv.json"
    inv.write_text(
        '[{"device_id": "cam-1", "ip": "10.0.0.1", "kind": "video", "tenant": "lyon",'
        ' "zone": "part-dieu"}]'
    )
    assert list(load_devices(inv, ("video",)).values()) == [
        DeviceRef("lyon", "part-dieu", "video", "cam-1")
    ]
    with pytest.raises(ConfigError, match=r"not in validation\.kinds"):
        load_devices(inv, ("lighting",))
    inv.write_text(
        '[{"device_id": "cam 1", "ip": "10.0.0.1", "kind": "video", "tenant": "lyon",'
        ' "zone": "part-dieu"}]'
    )
    with pytest.raises(ConfigError, match=r"traffic\.inventory_file"):
        load_devices(inv, ("video",))


async def test_enabled_sources_are_named_tasks(tmp_path: Path) -> None:
    cfg = Config(traffic={"broker_log_file": tmp_path / "log", "sys_topics": True})
    metrics = Metrics()
    tasks = traffic_tasks(cfg, None, metrics)  # type: ignore[arg-type]
    assert [name for name, _ in tasks] == ["traffic-broker-log", "traffic-sys-topics"]
    for _, coro in tasks:
        coro.close()
    assert TrafficMetrics.of(metrics.registry) is TrafficMetrics.of(metrics.registry)
    text = generate_latest(metrics.registry).decode()
    assert 'sentinel_traffic_source_up{source="capture"} 0.0' in text


async def test_a_capture_that_cannot_start_does_not_stop_the_agent() -> None:
    from sentinel.traffic.live import TrafficSources  # noqa: PLC0415

    metrics = Metrics()
    sources = TrafficSources(Config(traffic={"capture_iface": "nope-if0"}), None, metrics)  # type: ignore[arg-type]
    [(name, coro)] = sources.tasks()
    assert name == "traffic-capture"
    await asyncio.wait_for(coro, 5)  # returns: logged as traffic_capture_failed
    text = generate_latest(metrics.registry).decode()
    assert 'sentinel_traffic_source_up{source="capture"} 0.0' in text


# --- live capture ------------------------------------------------------------------------------


def test_capture_without_cap_net_raw_says_so() -> None:
    command = ["capture", "--iface", "lo", "--duration", "1"]
    if os.geteuid() != 0:  # already unprivileged: run the command here
        result = CliRunner().invoke(cli_app, command)
        code, err = result.exit_code, result.output
    else:  # drop root in a subprocess
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is needed to drop privileges")
        nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        done = subprocess.run(
            [*nobody, sys.executable, "-m", "sentinel.cli", *command],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd="/",
        )
        code, err = done.returncode, done.stderr
    assert code == 2, err
    assert "cannot capture on lo: capturing packets needs the CAP_NET_RAW capability" in err
    assert "run as root" in err
    assert "Traceback" not in err


def test_capture_on_a_missing_interface() -> None:
    result = CliRunner().invoke(cli_app, ["capture", "--iface", "nope-if0", "--duration", "0"])
    assert result.exit_code == 2
    assert "no network interface named 'nope-if0'" in result.output


def require_root() -> None:
    if os.geteuid() == 0:
        return
    reason = "live capture needs root (CAP_NET_RAW)"
    if os.environ.get("STACK_REQUIRED") == "1":
        pytest.fail(f"STACK_REQUIRED=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def test_loopback_packets_count_once() -> None:
    require_root()
    from sentinel.traffic.capture import LiveSocket  # noqa: PLC0415

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        port = rx.getsockname()[1]
        live = LiveSocket("lo", f"udp port {port}")
        try:
            analyzer = Analyzer()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                for _ in range(7):
                    tx.sendto(b"ping", ("127.0.0.1", port))
            deadline = time.monotonic() + 5
            fed = 0
            while fed < 7 and time.monotonic() < deadline:
                fed += live.read(analyzer)
                time.sleep(0.01)
            time.sleep(0.1)
            fed += live.read(analyzer)
        finally:
            live.close()
    assert fed == 7
    assert live.skipped_outgoing == 7
    s = analyzer.finish().summary
    assert (s.packets, s.udp_packets, s.flows) == (7, 7, 1)


def test_bad_bpf_filter() -> None:
    require_root()
    from sentinel.traffic.capture import LiveCaptureError, LiveSocket  # noqa: PLC0415

    with pytest.raises(LiveCaptureError, match="BPF filter 'tcp port nonsense'"):
        LiveSocket("lo", "tcp port nonsense")


def test_refusals_of_unknown_clients_with_an_inventory_do_not_break_the_analyzer() -> None:
    """The broker log's refusals with no connection to attach to come from the "unknown"
    endpoint; with an inventory, the analyzer looked it up as an IP and raised."""
    inventory = {ip_packed("10.3.0.1"): DeviceRef("lyon", "gerland", "video", "cam-1")}
    alerts: list[object] = []
    analyzer = Analyzer(
        TrafficConfig(brute_force_failures=3),
        inventory,
        keep_alerts=False,
        on_alert=lambda alert, _new: alerts.append(alert),
    )
    log = BrokerLogEvents()
    for i in range(5):
        for ev in log.feed(
            f"{1_790_000_000 + i}: Client <unknown> disconnected, not authorised.", 0
        ):
            analyzer.event(ev)
    assert alerts  # the refusals still count towards a brute force, on no device
