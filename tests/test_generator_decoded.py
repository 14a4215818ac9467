"""A decoded stream (`generate(..., decoded=True)`, what eval feeds the pipeline) is the
written stream as the agent's decoder reads it, report by report, for every scenario."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors.columns import Rows
from detectors.model import Record
from sentinel.agent import build_decoder
from sentinel.config import load_config
from sentinel.evaluation.runner import run_scenario
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
