"""The ingest benchmark's pure parts (benchmarks/ingest): /proc parsing, idle detection,
output parsers of the receivers, stream and line helpers, and the report's ratios and
verdicts on given numbers. Nothing here is timed."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import orjson
import pytest

from benchmarks.ingest import memory, procstat
from benchmarks.ingest.__main__ import metric_names_of
from benchmarks.ingest.influx_writes import WriteResult, curl_config, shift_lines, whole_batches
from benchmarks.ingest.latency import LatencyProbe, pick_rule
from benchmarks.ingest.measure import RunResult, finished_at
from benchmarks.ingest.memory import MemoryResult
from benchmarks.ingest.receiver import subscribed_line
from benchmarks.ingest.recv_agent import metric_sum
from benchmarks.ingest.recv_exporter import exporter_config, received_by_status
from benchmarks.ingest.recv_mosquitto import count_lines
from benchmarks.ingest.report import AGENT, EXPORTER, NATIVE, SUB, Latency, Report, percentile
from benchmarks.ingest.stack import BenchError, Stack, parse_env
from benchmarks.ingest.stream import Stream, device_clock, distinct_points, span_for, under_root
from detectors.model import Record
from sentinel.config import Config, load_config
from sentinel.decode import Decoder
from sentinel.topics import TopicPattern

REPO = Path(__file__).resolve().parents[1]
EVAL = REPO / "deploy" / "eval.toml"

# /proc/PID/stat of a process whose name holds a space and a ')': fields 14 and 15 (utime,
# stime) are 1234 and 56.
STAT = (
    "4242 (odd) name) S 1 4242 4242 0 -1 4194560 1043 0 0 0 1234 56 0 0 20 0 3 0 "
    "10086 27480064 3401 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0"
)


def test_stat_ticks_are_utime_plus_stime_counted_after_the_last_paren() -> None:
    assert procstat.parse_stat_ticks(STAT) == 1234 + 56


def test_stat_of_this_process_grows_with_work() -> None:
    before = procstat.cpu_seconds([__import__("os").getpid()])
    sum(i * i for i in range(2_000_000))
    assert procstat.cpu_seconds([__import__("os").getpid()]) > before


def test_rss_from_status_in_bytes() -> None:
    status = "Name:\tpython\nVmPeak:\t  999 kB\nVmRSS:\t   2048 kB\nThreads:\t3\n"
    assert procstat.parse_status_rss(status) == 2048 * 1024
    with pytest.raises(ValueError, match="VmRSS"):
        procstat.parse_status_rss("Name:\tkthreadd\nThreads:\t1\n")


def trace(*samples: tuple[float, float]) -> procstat.CpuTrace:
    t = procstat.CpuTrace()
    for s in samples:
        t.add(*s)
    return t


def test_quiet_only_after_a_full_window_without_cpu() -> None:
    busy_then_idle = trace((0.0, 0.0), (0.5, 0.4), (1.0, 0.8), (1.5, 0.81), (2.0, 0.82))
    assert busy_then_idle.quiet_for(2.0, 1.0, 0.05)
    assert not busy_then_idle.quiet_for(1.5, 1.0, 0.05)  # 0.41 s of CPU in that window
    assert not trace((0.0, 0.0), (0.5, 0.0)).quiet_for(0.5, 1.0, 0.05)  # too short to tell


def test_last_busy_is_the_last_sample_with_real_work() -> None:
    t = trace((0.0, 0.0), (0.1, 0.09), (0.2, 0.18), (0.3, 0.19), (0.4, 0.19))
    assert t.last_busy(0.02) == 0.2
    assert trace((0.0, 0.0), (0.1, 0.01)).last_busy(0.02) is None


def test_a_receiver_that_keeps_up_finishes_with_the_publisher() -> None:
    assert finished_at(10.0, None) == 10.0
    assert finished_at(10.0, 4.0) == 10.0  # light receiver: no sample counted as busy late
    assert finished_at(10.0, 14.5) == 14.5  # it drained a backlog after the publisher


def test_subscription_seen_in_mosquitto_log_only_for_that_client_and_filter() -> None:
    line = "2026-11-29T03:07:35: bench-sub-1 1 fleet/bench-x/#"
    assert subscribed_line(line, "bench-sub-1", "fleet/bench-x/#")
    assert not subscribed_line(line, "bench-sub-10", "fleet/bench-x/#")
    assert not subscribed_line(line, "bench-sub-1", "fleet/bench-y/#")
    assert not subscribed_line(
        "2026-11-29T03:07:35: New client connected from 127.0.0.1:39758 as bench-sub-1 (p2)",
        "bench-sub-1",
        "fleet/bench-x/#",
    )


def test_wc_output_is_a_line_count() -> None:
    assert count_lines(b"  200000\n") == 200_000


def test_exporter_received_messages_summed_over_topics_per_status() -> None:
    text = (
        "# HELP received_messages received messages per topic and status\n"
        "# TYPE received_messages counter\n"
        'received_messages{status="success",topic="fleet/a/z/video/c1/telemetry"} 3\n'
        'received_messages{status="success",topic="fleet/a/z/video/c2/telemetry"} 4\n'
        'received_messages{status="storeError",topic="fleet/a/z/video/c2/status"} 1\n'
        'upload_kbps{sensor="c1",topic="fleet/a/z/video/c1/telemetry"} 12.5 1795921656280\n'
    )
    assert received_by_status(text) == {"success": 7.0, "storeError": 1.0}


def test_exporter_config_reads_nested_metrics_and_the_device_id_from_the_topic() -> None:
    cfg = exporter_config("fleet/bench-1", "cid", "mqtt://127.0.0.1:18830", ["fps", "lux"])
    mqtt = cfg["mqtt"]
    assert isinstance(mqtt, dict)
    assert mqtt["server"] == "tcp://127.0.0.1:18830"
    assert mqtt["topic_path"] == "fleet/bench-1/#"
    found = re.fullmatch(
        mqtt["device_id_regex"], "fleet/bench-1/lyon/gerland/video/cam-7/telemetry"
    )
    assert found is not None
    assert found["deviceid"] == "cam-7"
    assert cfg["metrics"] == [
        {"prom_name": "fps", "mqtt_name": "metrics.fps", "help": "fps", "type": "gauge"},
        {"prom_name": "lux", "mqtt_name": "metrics.lux", "help": "lux", "type": "gauge"},
    ]


def test_agent_metrics_summed_by_label() -> None:
    text = (
        "# TYPE sentinel_messages_received_total counter\n"
        'sentinel_messages_received_total{source="mqtt"} 120.0\n'
        'sentinel_messages_received_total{source="traffic"} 7.0\n'
        "# TYPE sentinel_records_accepted_total counter\n"
        'sentinel_records_accepted_total{kind="video"} 20.0\n'
        'sentinel_records_accepted_total{kind="lighting"} 30.0\n'
    )
    assert metric_sum(text, "sentinel_messages_received_total", source="mqtt") == 120.0
    assert metric_sum(text, "sentinel_records_accepted_total") == 50.0
    assert metric_sum(text, "sentinel_rejects_total") == 0.0


def test_stream_moves_under_the_run_root_unretained_at_the_fixed_rate() -> None:
    msgs = [("fleet/lyon/z/video/c1/status", b"on"), ("fleet/lyon/z/video/c1/telemetry", b"{}")]
    paced = under_root(msgs, "fleet/bench-9", 4.0)
    assert [m.topic for m in paced] == [
        "fleet/bench-9/lyon/z/video/c1/status",
        "fleet/bench-9/lyon/z/video/c1/telemetry",
    ]
    assert [m.ts for m in paced] == [0.0, 0.25]
    assert not any(m.retain for m in paced)
    assert all(m.qos == 1 for m in paced)
    assert [m.ts for m in under_root(msgs, "fleet/x", None)] == [0.0, 0.0]


def test_the_probe_clock_follows_the_payload_times_of_the_stream() -> None:
    msgs = [("t", orjson.dumps({"ts": 1000.0 + 26 * i, "metrics": {"x": 1}})) for i in range(5)]
    s = Stream(Path("x"), 5, msgs, [], 5, 0)
    at = device_clock(s, rate=10.0)  # message i is due 0.1 * i s after the start
    assert at(0.0) == 1000.0
    assert at(0.25) == 1052.0  # the third message's time: the fleet's, not the wall's
    assert at(60.0) == 1104.0  # after the stream: its last time


def test_span_covers_the_messages_wanted() -> None:
    # 10 devices every 10 s send 1 msg/s: 100 messages need 100 s, plus one cadence.
    assert span_for(100, [10] * 10) == 110


def test_influx_keeps_one_point_per_series_and_timestamp() -> None:
    lines = [
        "video,tenant=a,zone=z,device_id=c1 fps=25.0 1000",
        "video,tenant=a,zone=z,device_id=c1 fps=24.0 1000",  # overwrites the first
        "video,tenant=a,zone=z,device_id=c1 fps=25.0 2000",
        "video,tenant=a,zone=z,device_id=c2 fps=25.0 1000",
    ]
    assert distinct_points(lines) == 3


def test_lines_shifted_by_whole_milliseconds_and_cut_to_whole_batches() -> None:
    lines = ['alerts,detector=x summary="a b",fingerprint="f" 1000', "video,t=a fps=1.0 5"]
    assert shift_lines(lines, 3) == ['alerts,detector=x summary="a b",fingerprint="f" 1003',
                                     "video,t=a fps=1.0 8"]  # fmt: skip
    assert whole_batches(list("abcdefg"), 3) == list("abcdef")


def test_curl_config_one_request_per_batch_with_credentials_in_each() -> None:
    text = curl_config("http://h/write?db=d", "u", "pw", [Path("/t/a.lp"), Path("/t/b.lp")])
    assert text.count("next\n") == 1
    assert text.count('user = "u:pw"') == 2
    assert '"@/t/a.lp"' in text
    assert '"@/t/b.lp"' in text


def test_stack_env_parsed_like_the_stack_script_writes_it() -> None:
    assert parse_env("# c\nSTACK_MQTT_URL=mqtt://127.0.0.1:18830\n\nX = 1\n") == {
        "STACK_MQTT_URL": "mqtt://127.0.0.1:18830",
        "X": "1",
    }


def test_latency_rule_raises_on_one_point_and_values_cross_its_line() -> None:
    rule = pick_rule(load_config(EVAL))
    cfg = next(d for d in load_config(EVAL).detectors if d.name == rule.detector)
    assert cfg.params.get("raise_after", 1) == 1
    assert rule.kind in cfg.kinds
    assert rule.anomalous > cfg.params["value"] >= rule.normal
    slow = Config(
        detectors=[{"name": "slow", "type": "threshold",
                    "params": {"metric": "x", "op": ">", "value": 1, "raise_after": 3}}]
    )  # fmt: skip
    with pytest.raises(BenchError, match="raise_after = 1"):
        pick_rule(slow)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 50) == 10.0
    assert percentile(values, 95) == 19.0
    assert percentile([0.3], 95) == 0.3
    assert percentile([], 95) is None


def test_memory_profiles_give_every_multi_point_rule_state_and_quiet_gives_none_to_rules() -> None:
    small = asyncio.run(memory.fill(200, "breaching"))
    states = small["detector_states"]
    assert isinstance(states, dict)
    assert small["admitted"] == 200
    # 100 lights, 60 mobility sensors, 40 cameras (kind_of), one breaching point each.
    assert states["lamp-driver-overheat"] == 100
    assert states["camera-upload-surge"] == 40
    assert states["camera-packet-flood"] == 40
    assert states["many-destinations"] == 200
    assert small["alerts_active"] == 0  # one point is not enough to raise these rules
    quiet = asyncio.run(memory.fill(200, "quiet"))
    thresholds = {d.name for d in load_config(EVAL).detectors if d.type == "threshold"}
    quiet_states = quiet["detector_states"]
    assert isinstance(quiet_states, dict)
    assert {quiet_states[name] for name in thresholds} == {0}  # a quiet device costs them nothing


def test_steady_profile_fills_the_longest_drift_history_on_the_longest_window(
    tmp_path: Path,
) -> None:
    def drift(name: str, params: str) -> str:
        return f'[[detectors]]\nname = "{name}"\ntype = "peer_drift"\nkinds = ["video"]\n' + (
            f'[detectors.params]\nmetric = "fps"\n{params}\n'
        )

    toml = tmp_path / "a.toml"
    toml.write_text(
        drift("a", "window_s = 60\nhistory = 10\nslope_windows = 30")
        + drift("b", "window_s = 600\nhistory = 5")
    )
    assert memory.steady_rounds(load_config(toml)) == (32, 600.0)
    (tmp_path / "none.toml").write_text("")
    assert memory.steady_rounds(load_config(tmp_path / "none.toml")) == (1, 0.0)


def test_steady_profile_is_a_healthy_fleet() -> None:
    steady = asyncio.run(memory.fill(30, "steady"))
    assert steady["admitted"] == 30
    assert steady["alerts_active"] == 0  # nothing fires: the state measured is a quiet one


def run(receiver: str, rate: float | None, cpu_us: float, msgs_per_s: float,
        lost: int = 0) -> RunResult:  # fmt: skip
    n = 100_000
    return RunResult(receiver, rate, n, n - lost, cpu_us * (n - lost) / 1e6,
                     (n - lost) / msgs_per_s, n, 1.0)  # fmt: skip


def report(agent_cpu: float, agent_rate: float, agent_lost: int = 0) -> Report:
    """paho's agent at the given figures; native's at half its CPU and 1.25x its rate."""
    return Report(
        command="x",
        stream={
            "messages": 100_000,
            "devices": 10,
            "bytes": 1,
            "broker": "b",
            "fixed_rate": 5000.0,
        },
        runs=[
            run(SUB, 5000.0, 10.0, 5000.0),
            run(EXPORTER, 5000.0, 40.0, 5000.0),
            run(AGENT, 5000.0, agent_cpu, 5000.0),
            run(NATIVE, 5000.0, agent_cpu / 2, 5000.0),
            run(SUB, None, 20.0, 20_000.0),
            run(EXPORTER, None, 50.0, 8_000.0),
            run(AGENT, None, agent_cpu, agent_rate, agent_lost),
            run(NATIVE, None, agent_cpu / 2, agent_rate * 1.25),
        ],
        latency={AGENT: Latency([0.1] * 19 + [1.5]), NATIVE: Latency([0.1] * 20)},
        idle={AGENT: Latency([0.1] * 20), NATIVE: Latency([0.2] * 20)},
        memory=[
            MemoryResult(100_000, "quiet", 0, 10_000_000, 100.0, 100_000, 0, {}, 0),
            MemoryResult(1_000_000, "quiet", 0, 120_000_000, 120.0, 1_000_000, 0, {}, 0),
            MemoryResult(1_000_000, "breaching", 0, 2_000_000_000, 2000.0, 1_000_000, 0, {}, 0),
        ],
        writes=[WriteResult("InfluxWriter", 1000, 0.5), WriteResult("curl", 1000, 0.25)],
    )


def verdicts(r: Report) -> dict[str, str]:
    return {t.name: t.verdict for t in r.targets()}


def test_ratios_to_both_peers() -> None:
    r = report(agent_cpu=60.0, agent_rate=16_000.0)
    assert r.ratios(5000.0)["cpu_vs_exporter"] == pytest.approx(1.5)
    assert r.ratios(5000.0)["cpu_vs_mosquitto_sub"] == pytest.approx(6.0)
    assert r.ratios(None)["throughput_vs_mosquitto_sub"] == pytest.approx(0.8)
    assert r.ratios(None)["throughput_vs_exporter"] == pytest.approx(2.0)
    assert r.ratios(5000.0, NATIVE)["cpu_vs_exporter"] == pytest.approx(0.75)
    assert r.ratios(None, NATIVE)["throughput_vs_mosquitto_sub"] == pytest.approx(1.0)
    assert r.native_vs_paho(None) == {
        "cpu": pytest.approx(0.5),
        "throughput": pytest.approx(1.25),
    }
    assert r.writes_per_s("InfluxWriter") == 2000.0
    assert r.writes_per_s("curl") == 4000.0


def test_targets_met_and_missed_on_given_figures() -> None:
    v = verdicts(report(agent_cpu=45.0, agent_rate=16_000.0))
    assert v["paho: ingest CPU per message, 5,000/s"] == "missed"  # 45 vs 40
    assert v["paho: ingest CPU per message, max"] == "met"  # 45 vs 50
    assert v["paho: throughput with zero loss, max"] == "met"  # exactly 0.8x
    assert v["paho: detection latency p95, under 5,000 msg/s"] == "met"  # 19th of 20: 0.1 s
    assert v["paho: detection latency p95, idle agent"] == "met"
    assert v["native: ingest CPU per message, 5,000/s"] == "met"  # 22.5 vs 40
    assert v["native: throughput with zero loss, max"] == "met"  # 1.0x
    assert v["memory per device, 1,000,000 devices, quiet"] == "met"
    assert v["memory per device, 1,000,000 devices, breaching"] == "missed"
    assert "memory per device, 100,000 devices, quiet" not in v  # judged at the largest N


def test_throughput_with_loss_is_missed_whatever_the_ratio() -> None:
    v = verdicts(report(agent_cpu=30.0, agent_rate=20_000.0, agent_lost=1))
    assert v["paho: throughput with zero loss, max"] == "missed"
    assert v["native: throughput with zero loss, max"] == "met"
    v = verdicts(report(agent_cpu=30.0, agent_rate=15_000.0))
    assert v["paho: throughput with zero loss, max"] == "missed"  # 0.75x


def test_latency_with_an_alert_never_seen_is_missed() -> None:
    r = report(agent_cpu=30.0, agent_rate=20_000.0)
    r.idle[NATIVE].missing = 1
    assert verdicts(r)["native: detection latency p95, idle agent"] == "missed"
    assert verdicts(r)["paho: detection latency p95, idle agent"] == "met"


def test_table_and_json_carry_every_run_and_target() -> None:
    r = report(agent_cpu=45.0, agent_rate=16_000.0)
    lines = r.lines()
    for name in (SUB, EXPORTER, AGENT, NATIVE):
        assert sum(line.startswith(f"{name:<26}") for line in lines) == 2  # one per rate
    verdict_lines = [line for line in lines if line.endswith(("met", "missed"))]
    assert len(verdict_lines) == len(r.targets())
    assert sum(line.startswith("native ÷ paho") for line in lines) == 2  # CPU and msg/s
    doc = r.to_json()
    assert len(doc["runs"]) == 8  # type: ignore[arg-type]
    assert set(doc["ratios"]) == {"paho", "native"}  # type: ignore[call-overload]
    assert set(doc["latency"]["idle"]) == {"paho", "native"}  # type: ignore[index]
    assert {t["verdict"] for t in doc["targets"]} == {"met", "missed"}  # type: ignore[attr-defined]


def test_a_run_without_the_native_agent_reports_paho_alone() -> None:
    r = report(agent_cpu=45.0, agent_rate=16_000.0)
    r.runs = [x for x in r.runs if x.receiver != NATIVE]
    assert r.agents == [AGENT]
    assert not any(line.startswith("native") for line in r.lines())
    assert r.native_vs_paho(None) == {"cpu": None, "throughput": None}


def test_each_anomaly_in_its_own_tenant_and_zone_so_storm_protection_notifies_it_alone() -> None:
    rule = pick_rule(load_config(EVAL))
    probe = LatencyProbe(Stack({}), rule, count=2, delay_s=0.0, spacing_s=0.0)
    decoder = Decoder(
        load_config(EVAL).validation,
        TopicPattern.parse("fleet/r/{tenant}/{zone}/{kind}/{device_id}/telemetry"),
        TopicPattern.parse("fleet/r/{tenant}/{zone}/{kind}/{device_id}/status"),
    )
    decoded = [
        decoder.decode(m.topic, m.payload, 1000.0)
        for m in (
            probe._message("fleet/r", "benchlat-ab-00", rule.anomalous, 0, 1000.0),
            probe._message("fleet/r", "benchlat-ab-01", rule.anomalous, 0, 1000.0),
            probe._message("fleet/r", "benchlat-ab-01", rule.normal, 1, 1000.0),
        )
    ]
    assert all(isinstance(r, Record) for r in decoded)
    records = [r for r in decoded if isinstance(r, Record)]
    assert records[0].device.zone != records[1].device.zone
    assert records[0].device.tenant != records[1].device.tenant  # no fleet incident either
    assert records[2].ts > records[1].ts  # a later point, not an overwrite
    assert records[0].metrics == {rule.metric: rule.anomalous}


def test_exporter_fields_are_the_payload_metrics_only() -> None:
    telemetry = {"metrics": {"fps": 25, "upload_kbps": 2.5}, "info": {"client_id": "c"}}
    s = Stream(
        Path("x"),
        1,
        [
            ("fleet/a/z/video/c/telemetry", orjson.dumps(telemetry)),
            ("fleet/a/z/video/c/status", b'{"state": "online"}'),
        ],
        [],
        0,
        0,
    )
    assert metric_names_of(s) == ["fps", "upload_kbps"]  # never info.* (not a metric name)
