"""A decoded stream (`generate(..., decoded=True)`, what eval feeds the pipeline) is the
written stream as the agent's decoder reads it, report by report, for every scenario."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from detectors.columns import Rows
from detectors.model import KINDS, Record
from sentinel.agent import build_decoder
from sentinel.config import load_config
from sentinel.evaluation.runner import build_pipeline, feed, run_scenario, stream_items
from simulators.generator import generate
from simulators.messages import Message, Run
from simulators.scenario import library, load_scenario
from simulators.scenario_run import prepare

REPO = Path(__file__).resolve().parents[1]
EVAL_CONFIG = REPO / "deploy" / "eval.toml"


def _streams(name: str) -> tuple[list[Message], list[Message | tuple[float, str, Record]]]:
    """The written stream, and the decoded one with each run's reports one by one."""
    run = prepare(load_scenario(name), devices=24, days=0.5)
    args = (run.fleet, run.start, run.end, None, run.seed)
    plan, prefix = run.compiled.plan, run.prefix
    written = list(generate(*args, topic_prefix=prefix, plan=plan))
    decoded: list[Message | tuple[float, str, Record]] = []
    for item in generate(*args, topic_prefix=prefix, plan=plan, decoded=True):
        if isinstance(item, Run):
            assert {ref.device_id for ref in item.reports.refs} <= item.senders
            keys = item.reports.keys
            assert keys is not None
            assert [keys.space.refs[k] for k in keys.rows.tolist()] == list(item.reports.refs)
            assert [keys.space.infos[k] for k in keys.rows.tolist()] == list(item.reports.infos)
            assert item.reports.info_ids().tolist() == [id(info) for info in item.reports.infos]
            records = Rows(item.reports)
            decoded += zip(item.sent.tolist(), item.topics, records, strict=True)
        else:
            decoded.append(item)
    return written, decoded


@pytest.mark.parametrize("name", library())
def test_each_decoded_report_is_what_the_decoder_reads_in_its_payload(name: str) -> None:
    decoder = build_decoder(load_config(EVAL_CONFIG))
    written, decoded = _streams(name)
    assert len(decoded) == len(written)
    plain = 0
    for sent, got in zip(written, decoded, strict=True):
        if not isinstance(got, Message):
            plain += 1
            read = decoder.decode(sent.topic, sent.payload, sent.ts)
            assert isinstance(read, Record)
            # repr: the time sent, the topic, metric order, floats against integers, the info
            # object, all compared.
            assert repr(got) == repr((sent.ts, sent.topic, read))
        else:
            assert got == sent  # effects' reports, statuses, scheduled messages: as written
    assert plain  # the decoded path was taken


def test_eval_gives_the_same_alerts_decoded_or_through_the_wire() -> None:
    cfg = load_config(EVAL_CONFIG)
    for name in ("telemetry-tampering", "mirai-recruitment", "video-exfiltration"):
        scenario = load_scenario(name)
        fast = run_scenario(scenario, cfg, devices=40, days=0.4)
        wire = run_scenario(scenario, cfg, devices=40, days=0.4, wire=True)
        assert fast.messages == wire.messages
        assert fast.rejected == wire.rejected
        assert fast.alerts == wire.alerts
        assert fast.alerts  # each scenario's attack is seen


def test_devices_beyond_the_cap_are_refused_alike_decoded_or_through_the_wire() -> None:
    cfg = load_config(EVAL_CONFIG)
    cfg = cfg.model_copy(
        update={"validation": cfg.validation.model_copy(update={"max_devices": 30})}
    )
    scenario = load_scenario("telemetry-tampering")
    fast = run_scenario(scenario, cfg, devices=40, days=0.1)
    wire = run_scenario(scenario, cfg, devices=40, days=0.1, wire=True)
    assert fast.rejected["device_cap"] > 0
    assert fast.rejected == wire.rejected
    assert fast.alerts == wire.alerts


def test_the_pipeline_counts_decoded_runs_by_kind_as_it_counts_payloads() -> None:
    cfg = load_config(EVAL_CONFIG)
    run = prepare(load_scenario("telemetry-tampering"), devices=40, days=0.1)
    counts = []
    for wire in (False, True):
        pipeline = build_pipeline(cfg)
        items = stream_items(run, broker=False, wire=wire)
        asyncio.run(feed(pipeline, items, cfg.pipeline.batch_max))
        registry = pipeline.metrics.registry
        counts.append(
            {
                kind: registry.get_sample_value("sentinel_records_accepted_total", {"kind": kind})
                for kind in KINDS
            }
        )
    assert counts[0] == counts[1]
    assert all(counts[0].values())  # every kind counted
