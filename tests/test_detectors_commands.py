from __future__ import annotations

import random

import orjson
import pytest
from pydantic import ValidationError

from detectors import registry
from detectors.columns import Columns
from detectors.commands import Commands
from detectors.model import CommandConsumer, CommandRecord, DeviceRef, Record, Transition
from detectors.slots import DeviceTable
from sentinel.alerting.alerts import AlertBook
from sentinel.config import DetectorConfig, ValidationConfig
from sentinel.deadletter import DeadLetters
from sentinel.decode import Decoder
from sentinel.engine import Engine, build_instances
from sentinel.metrics import Metrics
from sentinel.pipeline import Pipeline
from sentinel.topics import TopicPattern

# 2023-11-15 10:00 in Lyon (UTC+1).
DAY = 1_700_038_800.0
LIGHTS = [DeviceRef("lyon", "confluence", "lighting", f"lum-{i}") for i in range(8)]
ELSEWHERE = [DeviceRef("lyon", "vaise", "lighting", f"lum-v{i}") for i in range(8)]


def make(**params: object) -> Commands:
    detector = registry.create("commands", registry.parse_params("commands", params))
    assert isinstance(detector, Commands)
    assert isinstance(detector, CommandConsumer)
    return detector


def cmd(device: DeviceRef, ts: float, sender: str | None = "console") -> CommandRecord:
    return CommandRecord(device, ts, "set_dim", {"dim_pct": 0.0}, sender)


def test_mass_commands_to_a_zone_raise_once() -> None:
    det = make(mass_min_devices=5, mass_window_s=300)
    out = det.update_commands([cmd(d, DAY + 10 * i) for i, d in enumerate(LIGHTS)])
    assert [(t.device, t.firing) for t in out] == [(LIGHTS[4], True)]
    ev = out[0].evidence
    assert ev["devices_in_window"] == 5
    assert ev["command"] == "set_dim"
    assert ev["args"] == "dim_pct=0"
    assert "mass" in str(ev["reasons"])


def test_spread_out_or_split_commands_are_not_mass() -> None:
    det = make(mass_min_devices=5, mass_window_s=300)
    slow = [cmd(d, DAY + 120 * i) for i, d in enumerate(LIGHTS)]
    assert det.update_commands(slow) == []
    det = make(mass_min_devices=5)
    split = [cmd(d, DAY + i) for i in range(4) for d in (LIGHTS[i], ELSEWHERE[i])]
    assert det.update_commands(split) == []


def test_configured_hours_including_a_span_over_midnight() -> None:
    det = make(hours=[7, 20])
    night = DAY + 17 * 3600 + 300  # 03:05 the next day
    assert det.update_commands([cmd(LIGHTS[0], DAY)]) == []
    out = det.update_commands([cmd(LIGHTS[1], night)])
    assert out[0].evidence["local_hour"] == 3
    assert out[0].evidence["reasons"] == "unusual hour 03h"
    det = make(hours=[22, 6])
    assert det.update_commands([cmd(LIGHTS[1], night)]) == []
    assert len(det.update_commands([cmd(LIGHTS[2], DAY)])) == 1


def test_learned_hours_and_senders_after_warm_up() -> None:
    det = make(warmup_commands=20, hour_min_share=0.05)
    routine = [cmd(LIGHTS[i % 2], DAY + 86_400 * i) for i in range(30)]  # one a day at 10:00
    assert det.update_commands(routine) == []
    later = DAY + 86_400 * 31
    out = det.update_commands([cmd(LIGHTS[0], later + 5 * 3600)])  # 15:00
    assert out[0].evidence["reasons"] == "unusual hour 15h"
    det2 = make(warmup_commands=20)
    det2.update_commands(routine)
    out = det2.update_commands([cmd(LIGHTS[0], later, sender="mobile-7f3a")])
    assert out[0].evidence["reasons"] == "unusual sender mobile-7f3a"


def test_allowed_senders() -> None:
    det = make(allowed_senders=["console"])
    assert det.update_commands([cmd(LIGHTS[0], DAY)]) == []
    assert det.update_commands([cmd(LIGHTS[0], DAY + 1, sender=None)]) == []  # unknown: no check
    out = det.update_commands([cmd(LIGHTS[1], DAY + 2, sender="intruder")])
    assert out[0].summary.endswith("unusual sender intruder")


def test_flagged_commands_teach_nothing() -> None:
    det = make(hours=[7, 20])
    det.update_commands([cmd(LIGHTS[0], DAY - 8 * 3600, sender="x")])  # 02:00: flagged
    assert det.seen_ == 0
    assert det.senders_ == {}


def test_the_alert_clears_on_the_telemetry_clock() -> None:
    det = make(hours=[7, 20], hold_s=900)
    night = DAY - 7 * 3600
    raised = det.update_commands([cmd(LIGHTS[0], night)])
    assert [t.firing for t in raised] == [True]
    quiet = [Record(LIGHTS[1], night + 60 * i, {"on": 1.0}) for i in range(20)]
    out = det.update(quiet)
    assert [(t.device, t.firing) for t in out] == [(LIGHTS[0], False)]
    assert out[0].ts == night + 900
    assert det.tracked_devices() == 0


def test_hours_are_checked() -> None:
    with pytest.raises(ValidationError, match="hours"):
        make(hours=[25, 3])


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def put(self, lines: list[str]) -> None:
        self.lines += lines


async def test_commands_reach_the_detector_through_the_agents_pipeline() -> None:
    """Decoded from the command topic, stored in `commands`, routed to the detector."""
    config = DetectorConfig(name="commands", type="commands", params={"hours": [7, 20]})
    store = _Lines()
    metrics = Metrics()
    pipeline = Pipeline(
        decoder=Decoder(
            ValidationConfig(),
            TopicPattern.parse("fleet/{tenant}/{zone}/{kind}/{device_id}/telemetry"),
            TopicPattern.parse("fleet/{tenant}/{zone}/{kind}/{device_id}/status"),
            TopicPattern.parse("fleet/{tenant}/{zone}/{kind}/{device_id}/command"),
        ),
        store=store,
        engine=Engine(build_instances([config])),
        book=AlertBook(metrics),
        notifiers=[],
        metrics=metrics,
        deadletters=DeadLetters(10),
        max_devices=100,
    )
    night = DAY - 7 * 3600  # 03:00 in Lyon
    batch = [
        (
            f"fleet/lyon/confluence/lighting/{d.device_id}/command",
            orjson.dumps({"cmd": "set_dim", "dim_pct": 0, "ts": night + i}),
        )
        for i, d in enumerate(LIGHTS)
    ]
    alerts = await pipeline.process(batch, night + 60)
    assert [(a.device.device_id, a.source.name) for a in alerts] == [("lum-0", "commands")]
    assert pipeline.rejected == {}
    assert sum(line.startswith("commands,") for line in store.lines) == len(LIGHTS)


def test_a_zone_whose_quiet_time_passed_clears_on_the_next_record_even_a_late_one() -> None:
    # A suspicious command stamped well before the stream's time: its zone is due at once,
    # and clears on the next telemetry record, at the stream's time, however old that record.
    det = make(hours=(7, 20), hold_s=900)
    assert det.update([Record(LIGHTS[0], DAY + 20_000, {"on": 1.0})]) == []
    night = DAY - 8 * 3600  # 02:00 local
    raised = det.update_commands([cmd(LIGHTS[1], night)])
    assert [t.firing for t in raised] == [True]
    out = det.update([Record(LIGHTS[2], DAY + 10_000, {"on": 1.0})])
    assert [(t.device, t.firing, t.ts) for t in out] == [(LIGHTS[1], False, DAY + 20_000)]


def test_the_column_path_clears_as_the_per_record_loop_does() -> None:
    """Mass commands to many zones at staggered times, then telemetry every few seconds with
    late records among it, cut into random batches: the same clears at the same stream times
    either way."""
    rng = random.Random(5)
    zones = [
        [DeviceRef("lyon", f"z{z}", "lighting", f"l{z}-{i}") for i in range(3)] for z in range(12)
    ]
    by_rows, by_columns, table = make(mass_min_devices=3), make(mass_min_devices=3), DeviceTable()
    want: list[Transition] = []
    got: list[Transition] = []
    t = DAY
    for _ in range(3):
        commands = [
            cmd(d, t + 3 * z + i) for z, zone in enumerate(zones) for i, d in enumerate(zone)
        ]
        want += by_rows.update_commands(commands)
        got += by_columns.update_commands(commands)
        late = [rng.random() < 0.3 for _ in range(900)]
        records = [
            Record(LIGHTS[0], t + 5 * i - (rng.uniform(50, 400) if late[i] else 0), {"on": 1.0})
            for i in range(900)
        ]
        start = 0
        while start < len(records):
            batch = records[start : start + rng.choice([1, 3, 20, 200])]
            start += len(batch)
            want += by_rows.update(batch)
            got += by_columns.update_columns(Columns.of(batch, table))
        t += 5000
    assert repr(got) == repr(want)
    assert sum(not c.firing for c in want) >= 20  # clears did happen, many within a batch
