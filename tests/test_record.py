"""Recordings: lossless files, the same alerts on every replay, and record -> replay on a broker."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from pathlib import Path

import orjson
import pytest

from sentinel.config import load_config
from sentinel.evaluation.runner import run_recording, run_scenario
from sentinel.record import Recorder, RecordError
from sentinel.replay import replay
from simulators.messages import Message
from simulators.publisher import publish
from simulators.recordfile import (
    BrokerEvent,
    Recorded,
    RecordingError,
    RecordingWriter,
    open_recording,
)
from simulators.scenario import load_scenario
from simulators.scenario_run import prepare, write_recording
from tests.stack_env import require_stack, secret

REPO = Path(__file__).resolve().parents[1]


def test_file_round_trip_is_lossless(tmp_path: Path) -> None:
    entries = [
        Recorded(1.5, "fleet/a/b/video/c-1/telemetry", b'{"ts": 1.5, "metrics": {"x": 1}}', 1),
        Recorded(1.5, "fleet/a/b/video/c-1/status", b"offline", 1, True),
        Recorded(2.0, "weird/topic/\u00e9", b"\x00\xff\xfe binary \x80", 0, False),
        Recorded(2.25, "t", b"", 2, True),
        Recorded(2.5, "t", "caf\u00e9 \u2603".encode(), 1, False),
    ]
    event = BrokerEvent(1.75, {"event": "connect_refused", "username": "admin"})
    for suffix in (".gz",):
        path = tmp_path / f"rec.jsonl{suffix}"
        with RecordingWriter(path, {"source": "test"}) as out:
            for e in entries[:2]:
                out.write(e.ts, e.topic, e.payload, e.qos, e.retain)
            out.write_event(event.ts, event.event)
            for e in entries[2:]:
                out.write(e.ts, e.topic, e.payload, e.qos, e.retain)
        rec = open_recording(path)
        assert rec.meta == {"source": "test"}
        assert list(rec.entries()) == [*entries[:2], event, *entries[2:]]
        assert list(rec.messages()) == entries


def test_not_a_recording(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(b"plain text")
    with pytest.raises(RecordingError):
        open_recording(path)
    with pytest.raises(RecordingError, match="cannot read"):
        open_recording(tmp_path / "missing.gz")


def test_simulated_file_holds_the_stream_and_the_broker_events(tmp_path: Path) -> None:
    run = prepare(load_scenario("mqtt-bruteforce"), devices=20, days=0.2, start=None)
    run = prepare(run.scenario, devices=20, start=run.truth[0].start - 300, days=0.02)
    path = tmp_path / "bf.gz"
    summary = write_recording(run, path)
    rec = open_recording(path)
    assert rec.meta["scenario"] == "mqtt-bruteforce"
    got = list(rec.entries())
    msgs = [(e.ts, e.topic, e.payload, e.qos, e.retain) for e in got if isinstance(e, Recorded)]
    assert msgs == [(m.ts, m.topic, m.payload, m.qos, m.retain) for m in run.messages()]
    events = [e for e in got if isinstance(e, BrokerEvent)]
    assert summary.events == len(events) > 0
    assert {e.event["event"] for e in events} == {"connect_refused"}
    assert [e.ts for e in got] == sorted(e.ts for e in got)


def test_replaying_a_file_gives_the_same_alerts(tmp_path: Path) -> None:
    """Through the pipeline: twice from the file, and once straight from the simulator."""
    cfg = load_config(REPO / "deploy" / "eval.toml")
    sc = load_scenario("ddos-participation")
    run = prepare(sc, devices=40, start=None)
    run = prepare(sc, devices=40, start=run.truth[0].start - 1800, days=0.05)
    path = tmp_path / "ddos.gz"
    write_recording(run, path)
    first = run_recording(path, run.truth, cfg)
    second = run_recording(path, run.truth, cfg)
    direct = run_scenario(sc, cfg, devices=40, seed=run.seed, days=0.05, start=run.start)
    assert first.alerts
    assert first.alerts == second.alerts
    assert first.messages == second.messages == direct.messages
    assert first.alerts == direct.alerts


# --- against the real broker -----------------------------------------------------------------


@pytest.mark.stack
async def test_record_then_replay_through_the_broker_is_lossless(tmp_path: Path) -> None:
    env = require_stack("mosquitto")
    url = env["STACK_MQTT_URL"]
    root = f"fleet/test-rec-{uuid.uuid4().hex[:10]}"
    sc = load_scenario("impersonation")
    run = prepare(sc, devices=30, start=time.time() - 900, days=900 / 86_400, topic_prefix=root)
    sent = [m for m in run.messages() if not m.origin]
    source = tmp_path / "source.gz"
    with RecordingWriter(source) as out:
        for m in sent:
            out.write(m.ts, m.topic, m.payload, m.qos, m.retain)

    first = tmp_path / "first.gz"
    recorder = Recorder(
        url,
        first,
        [f"{root}/#"],
        username="sentinel-operator",
        password=secret("mqtt-operator"),
        client_id=f"rec-{uuid.uuid4().hex[:8]}",
    )
    recorder.start()
    try:
        stats = await replay(
            source,
            mqtt_url=url,
            username="sentinel-sim",
            password=secret("mqtt-sim"),
            client_id=f"replay-{uuid.uuid4().hex[:8]}",
            speed=math.inf,
        )
        for _ in range(200):
            if recorder.messages >= len(sent):
                break
            await asyncio.sleep(0.1)
    finally:
        recorder.stop()
        # Retained statuses would outlive the test on the persistent broker.
        await publish(
            [Message(0.0, m.topic, b"", "-", 1, True) for m in sent if m.retain],
            mqtt_url=url,
            username="sentinel-sim",
            password=secret("mqtt-sim"),
            client_id=f"clean-{uuid.uuid4().hex[:8]}",
            speed=math.inf,
        )
    assert stats.publish.published == stats.publish.acked == len(sent)
    got = list(open_recording(first).messages())
    # Same topics, payloads, QoS and retain flags, in the same order (one connection, QoS 1).
    assert [(e.topic, e.payload, e.qos, e.retain) for e in got] == [
        (m.topic, m.payload, m.qos, m.retain) for m in sent
    ]
    # Receive times are the recorder's clock, in order.
    assert [e.ts for e in got] == sorted(e.ts for e in got)


@pytest.mark.stack
def test_recorder_refused_login_is_an_error(tmp_path: Path) -> None:
    env = require_stack("mosquitto")
    recorder = Recorder(
        env["STACK_MQTT_URL"],
        tmp_path / "no.gz",
        ["fleet/#"],
        username="sentinel-operator",
        password="not-the-password",
        client_id=f"rec-{uuid.uuid4().hex[:8]}",
    )
    with pytest.raises(RecordError, match="refused"):
        recorder.start(timeout_s=5)


def test_cli_scenario_to_file_then_eval_the_recording(tmp_path: Path) -> None:
    from typer.testing import CliRunner  # noqa: PLC0415

    from sentinel.cli import app  # noqa: PLC0415

    out, truth = tmp_path / "surge.gz", tmp_path / "truth.jsonl"
    runner = CliRunner()
    made = runner.invoke(
        app,
        [
            "scenario",
            "run",
            "camera-upload-surge",
            "--devices",
            "20",
            "--start",
            "2025-11-24T12:30:00+01:00",
            "--days",
            "0.03",
            "--out",
            str(out),
            "--truth",
            str(truth),
        ],
    )
    assert made.exit_code == 0, made.output
    assert "camera_upload_surge" in truth.read_text()
    scored = runner.invoke(
        app,
        [
            "eval",
            "--recording",
            str(out),
            "--truth",
            str(truth),
            "--config",
            str(REPO / "deploy" / "sentinel.toml"),
            "--json",
        ],
    )
    assert scored.exit_code == 0, scored.output
    doc = orjson.loads(scored.stdout[scored.stdout.index("{") :])
    assert doc["score"]["attacks"]["camera_upload_surge"]["recall"] == 1.0
