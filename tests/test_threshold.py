from __future__ import annotations

import json
import re
from collections.abc import Sequence

import numpy as np
import pytest
from pydantic import ValidationError

from detectors import registry
from detectors.model import DeviceRef, Record, Transition
from detectors.threshold import NetworkSet, ThresholdParams, ThresholdRule

CAM = DeviceRef("lyon", "gerland", "video", "cam-1")
OTHER = DeviceRef("lyon", "gerland", "video", "cam-2")


def rule(**kw: object) -> ThresholdRule:
    params = {"metric": "upload_kbps", "op": ">", "value": 100.0, **kw}
    return ThresholdRule(ThresholdParams.model_validate(params))


def feed(
    r: ThresholdRule, values: Sequence[float], device: DeviceRef = CAM
) -> list[tuple[int, bool]]:
    out = []
    for i, v in enumerate(values):
        for t in r.update([Record(device, float(i), {"upload_kbps": v})]):
            out.append((i, t.firing))
    return out


def test_raises_after_n_and_clears_after_m() -> None:
    r = rule(raise_after=3, clear_after=2)
    values = [50, 150, 150, 50, 150, 150, 150, 200, 90, 150, 90, 90, 90]
    assert feed(r, values) == [(6, True), (11, False)]


def test_single_point_defaults_and_other_comparisons() -> None:
    assert feed(rule(), [101, 99]) == [(0, True), (1, False)]
    assert feed(rule(op="<", value=10), [11, 9, 12]) == [(1, True), (2, False)]
    assert feed(rule(op=">=", value=100), [100]) == [(0, True)]


def test_devices_are_independent_and_evidence_explains() -> None:
    r = rule(raise_after=2)
    batch = [
        Record(CAM, 1.0, {"upload_kbps": 500.0}),
        Record(OTHER, 1.0, {"upload_kbps": 500.0}),
        Record(CAM, 2.0, {"upload_kbps": 900.0}),
        Record(OTHER, 2.0, {"upload_kbps": 1.0}),
    ]
    changes = r.update(batch)
    assert [(t.device, t.firing) for t in changes] == [(CAM, True)]
    ev = changes[0].evidence
    assert ev["value"] == 900.0
    assert ev["condition"] == "upload_kbps > 100"
    assert changes[0].ts == 2.0


def test_quiet_devices_hold_no_state_and_forget_drops_state() -> None:
    r = rule(raise_after=5)
    feed(r, [1, 2, 3])
    assert r.tracked_devices() == 0
    feed(r, [500])
    assert r.tracked_devices() == 1
    r.forget({"cam-1"})
    assert r.tracked_devices() == 0


def test_records_without_the_metric_are_ignored() -> None:
    r = rule()
    assert r.update([Record(CAM, 1.0, {"fps": 25.0})]) == []


def test_registry_validates_params_and_rejects_duplicates() -> None:
    assert registry.get("threshold") is ThresholdRule
    with pytest.raises(Exception, match="raise_after"):
        registry.parse_params("threshold", {"metric": "x", "op": ">", "value": 1, "raise_after": 0})
    with pytest.raises(ValueError, match="already registered"):
        registry.register("threshold")(ThresholdRule)
    with pytest.raises(ValueError, match="unknown detector type"):
        registry.get("nope")


# --- sets, CIDR sets, durations, peer-group quantiles ------------------------------------

LIGHT = DeviceRef("lyon", "part-dieu", "lighting", "lig-0")
T0 = 1_700_000_000.0


def make(**params: object) -> ThresholdRule:
    return ThresholdRule(ThresholdParams.model_validate(params))


def info_record(device: DeviceRef, ts: float, **info: str) -> Record:
    return Record(device, ts, {"upload_kbps": 1.0}, info=info)


def firing_at(r: ThresholdRule, records: Sequence[Record]) -> list[tuple[float, bool]]:
    return [(t.ts, t.firing) for t in r.update(records)]


def test_number_sets_on_a_metric() -> None:
    r = make(metric="net_dst_port", op="not_in", values=[443, 8883], raise_after=2)
    ports = [443, 8883, 23, 23, 443, 23, 2323, 443]
    records = [Record(CAM, float(i), {"net_dst_port": float(p)}) for i, p in enumerate(ports)]
    assert firing_at(r, records) == [(3.0, True), (4.0, False), (6.0, True), (7.0, False)]
    inside = make(metric="net_dst_port", op="in", values=[23, 2323])
    assert firing_at(inside, records) == [(2.0, True), (4.0, False), (5.0, True), (7.0, False)]


def test_string_sets_on_an_info_field_and_missing_field_is_no_data() -> None:
    r = make(field="info.firmware", op="not_in", values=["5.7.3", "5.7.4"])
    records = [
        info_record(CAM, 1.0, firmware="5.7.3"),
        info_record(CAM, 2.0, client_id="cam-1"),  # no firmware: skipped, state unchanged
        info_record(CAM, 3.0, firmware="6.6.6-evil"),
        info_record(CAM, 4.0),
        info_record(CAM, 5.0, firmware="5.7.4"),
    ]
    changes = r.update(records)
    assert [(t.ts, t.firing) for t in changes] == [(3.0, True), (5.0, False)]
    ev = changes[0].evidence
    assert ev["field"] == "info.firmware"
    assert ev["value"] == "6.6.6-evil"
    assert ev["condition"] == "info.firmware not in {'5.7.3', '5.7.4'}"
    assert ev["set_size"] == 2
    assert "metric" not in ev
    assert "threshold" not in ev


def test_large_sets_are_named_by_size_not_dumped() -> None:
    allowed = [f"1.{i}" for i in range(500)]
    r = make(field="info.firmware", op="not_in", values=allowed)
    (t,) = r.update([info_record(CAM, 1.0, firmware="9.9")])
    assert t.evidence["condition"] == "info.firmware not in a set of 500 values"
    assert t.evidence["set_size"] == 500
    assert "1.499" not in t.summary
    assert len(t.summary) < 200


def test_cidr_sets_on_the_source_address() -> None:
    video_vlan = make(field="info.src_ip", op="not_in_cidr", cidrs=["10.3.0.0/16", "fd00::/8"])
    ips = ["10.3.0.42", "10.3.255.1", "10.4.0.1", "fd12::7", "::ffff:10.3.1.1", "not-an-ip"]
    records = [info_record(CAM, float(i), src_ip=ip) for i, ip in enumerate(ips)]
    changes = video_vlan.update(records)
    # Outside the VLAN at 2 (10.4/16), back at 3 (v6 inside), the mapped v4 is inside, and
    # an unparsable address counts as outside every network.
    assert [(t.ts, t.firing) for t in changes] == [(2.0, True), (3.0, False), (5.0, True)]
    assert changes[0].evidence["set_size"] == 2
    assert changes[0].evidence["condition"] == "info.src_ip not in {'10.3.0.0/16', 'fd00::/8'}"
    banned = make(field="info.src_ip", op="in_cidr", cidrs=["192.0.2.0/24", "198.51.100.7/32"])
    records = [
        info_record(CAM, 1.0, src_ip="192.0.2.200"),
        info_record(CAM, 2.0, src_ip="198.51.100.8"),
        info_record(OTHER, 3.0, src_ip="198.51.100.7"),
        info_record(OTHER, 4.0, src_ip="garbage"),
    ]
    expected = [(CAM, 1.0, True), (CAM, 2.0, False), (OTHER, 3.0, True), (OTHER, 4.0, False)]
    assert [(t.device, t.ts, t.firing) for t in banned.update(records)] == expected


def test_network_set_membership_edges() -> None:
    nets = NetworkSet(["10.0.0.0/24", "10.0.1.0/24", "2001:db8::/32"])  # merged into a /23
    assert "10.0.0.0" in nets
    assert "10.0.1.255" in nets
    assert "10.0.2.0" not in nets
    assert "9.255.255.255" not in nets
    assert "2001:db8:ffff::1" in nets
    assert "2001:db9::" not in nets
    assert "" not in nets
    assert "10.0.0.1/32" not in nets
    assert 42 not in nets


def test_duration_counts_device_time_and_a_replay_behaves_the_same() -> None:
    def run(start: float) -> list[tuple[float, bool]]:
        r = make(metric="upload_kbps", op=">", value=100, for_s=120, clear_after=2)
        values = [500, 500, 500, 50, 500, 500, 500, 500, 500, 500, 50, 50]
        records = [Record(CAM, start + 30 * i, {"upload_kbps": v}) for i, v in enumerate(values)]
        # One record per call: how the stream is cut cannot matter, only report times.
        return [(ts - start, firing) for rec in records for ts, firing in firing_at(r, [rec])]

    # Breaching from 120 s: held 0, 30, 60, 90, 120 s at the report of 240 s.
    assert run(T0) == [(240.0, True), (330.0, False)]
    assert run(1_500_000_000.0) == run(T0)  # a replay of old records


def test_duration_and_points_both_needed_and_evidence_says_how_long() -> None:
    r = make(metric="upload_kbps", op=">", value=100, for_s=60, raise_after=4)
    # Slow reports: 60 s is held at the second point, but 4 points are needed.
    records = [Record(CAM, T0 + 100 * i, {"upload_kbps": 500.0}) for i in range(4)]
    changes = r.update(records)
    assert [(t.ts, t.firing) for t in changes] == [(T0 + 300, True)]
    assert changes[0].evidence["held_s"] == 300.0
    assert changes[0].evidence["for_s"] == 60.0
    # Fast reports: 4 points come quickly, 60 s of device time do not.
    fast = make(metric="upload_kbps", op=">", value=100, for_s=60, raise_after=4)
    records = [Record(OTHER, T0 + 10 * i, {"upload_kbps": 500.0}) for i in range(7)]
    assert [(t.ts, t.firing) for t in fast.update(records)] == [(T0 + 60, True)]


def test_duration_state_is_small_and_quiet_devices_are_stateless() -> None:
    r = make(metric="upload_kbps", op=">", value=100, for_s=600)
    r.update(
        [Record(CAM, T0, {"upload_kbps": 500.0}), Record(CAM, T0 + 30, {"upload_kbps": 500.0})]
    )
    assert r.state_[CAM] == (2, T0)
    r.update([Record(CAM, T0 + 60, {"upload_kbps": 5.0})])
    assert r.tracked_devices() == 0
    # The run starts again from the next breach.
    records = [Record(CAM, T0 + 90 + 300 * i, {"upload_kbps": 500.0}) for i in range(3)]
    assert [t.ts for t in r.update(records)] == [T0 + 690]


def test_state_carried_across_a_for_s_change_does_not_break() -> None:
    # sentinel reload carries a rule's state into its new parameters.
    before = make(metric="upload_kbps", op=">", value=100, raise_after=2)
    before.update([Record(CAM, T0, {"upload_kbps": 500.0})])
    after = make(metric="upload_kbps", op=">", value=100, raise_after=2, for_s=60)
    after.load_state(before.state_dict())
    records = [Record(CAM, T0 + 30 * i, {"upload_kbps": 500.0}) for i in range(1, 8)]
    # The carried run has no start time: it is timed from the first report after the change.
    assert [t.ts for t in after.update(records)] == [T0 + 90]
    back = make(metric="upload_kbps", op=">", value=100, raise_after=9)
    back.load_state(make(metric="upload_kbps", op=">", value=100, for_s=600).state_dict())
    pending = make(metric="upload_kbps", op=">", value=100, raise_after=9, for_s=600)
    pending.update([Record(CAM, T0, {"upload_kbps": 500.0})])
    back.load_state(pending.state_dict())
    assert back.update([Record(CAM, T0 + 1, {"upload_kbps": 500.0})]) == []
    assert back.state_[CAM] == 2


def zone(n: int, ts: float, temps: Sequence[float], zone_name: str = "part-dieu") -> list[Record]:
    return [
        Record(
            DeviceRef("lyon", zone_name, "lighting", f"lig-{i}"),
            ts + i * 0.1,
            {"driver_temp_c": temps[i]},
            info={"firmware": "2.1" if i % 2 else "2.0"},
        )
        for i in range(n)
    ]


def peer_rule(**kw: object) -> ThresholdRule:
    params: dict[str, object] = {
        "metric": "driver_temp_c",
        "op": ">",
        "value_from": "peers",
        "peer_quantile": 0.99,
        "peer_factor": 1.2,
        "min_peers": 5,
        **kw,
    }
    return make(**params)


def normal_temps(n: int, cycle: int) -> list[float]:
    return [40.0 + ((i * 7 + cycle * 3) % 11) for i in range(n)]  # 40..50 °C


def test_peer_quantile_flags_the_one_outlier_of_twenty() -> None:
    r = peer_rule(raise_after=2, clear_after=2)
    raised: list[Transition] = []
    for cycle in range(12):
        temps = normal_temps(20, cycle)
        if 4 <= cycle < 8:
            temps[13] = 71.0  # above 1.2 x the peers' p99 (at most 1.2 x 50 = 60)
        raised += r.update(zone(20, T0 + 60 * cycle, temps))
    assert [(t.device.device_id, t.firing) for t in raised] == [("lig-13", True), ("lig-13", False)]
    up, down = raised
    assert up.ts == T0 + 60 * 5 + 1.3
    assert down.ts == T0 + 60 * 9 + 1.3
    ev = up.evidence
    assert ev["peers"] == 19
    assert ev["peer_quantile"] == 0.99
    assert isinstance(ev["peer_value"], float)
    assert 49.0 <= ev["peer_value"] <= 50.0
    assert ev["threshold"] == pytest.approx(1.2 * ev["peer_value"])
    assert ev["baseline"] == f"p99 of 19 peers of lyon/part-dieu lighting: {ev['peer_value']:,.6g}"
    assert ev["condition"] == f"driver_temp_c > 1.2 x p99 of peers ({ev['threshold']:,.6g})"


def test_peer_quantile_matches_numpy_and_excludes_the_device() -> None:
    rng = np.random.default_rng(3)
    temps = [float(v) for v in rng.normal(45, 3, 20)]
    r = peer_rule(peer_quantile=0.9, peer_factor=1.0, min_peers=19)
    r.update(zone(20, T0, temps))  # fills the table; lig-19 is the first with 19 peers
    probe = [
        Record(DeviceRef("lyon", "part-dieu", "lighting", "lig-3"), T0 + 60, {"driver_temp_c": 1e6})
    ]
    (t,) = r.update(probe)
    others = [v for i, v in enumerate(temps) if i != 3]
    assert t.evidence["peer_value"] == pytest.approx(float(np.quantile(others, 0.9)))


def test_no_verdict_without_enough_peers_and_groups_are_separate() -> None:
    r = peer_rule(min_peers=5)
    hot = [40.0] * 5 + [90.0]
    # Five lights in one zone, one very hot light alone in another: nobody has 5 peers.
    records = zone(5, T0, hot) + zone(1, T0 + 1, [90.0], "gerland")
    assert r.update(records) == []
    assert r.tracked_devices() == 6
    # A camera in the same zone is no peer of the lights.
    cam = DeviceRef("lyon", "part-dieu", "video", "cam-9")
    assert r.update([Record(cam, T0 + 2, {"driver_temp_c": 500.0})]) == []
    # The sixth light of part-dieu has 5 peers: its heat is judged.
    (t,) = r.update(zone(6, T0 + 3, hot)[5:])
    assert t.device.device_id == "lig-5"
    assert t.evidence["peers"] == 5


def test_peer_key_groups_by_firmware() -> None:
    r = peer_rule(peer_key="firmware", min_peers=4, peer_factor=1.0, peer_quantile=0.5)
    # Even ids run 2.0 and report 40, odd ones 2.1 and report 60: each is normal among its own.
    temps = [40.0 if i % 2 == 0 else 60.0 for i in range(10)]
    assert r.update(zone(10, T0, temps) + zone(10, T0 + 60, temps)) == []
    pooled = peer_rule(min_peers=4, peer_factor=1.0, peer_quantile=0.5)
    raised = pooled.update(zone(10, T0, temps) + zone(10, T0 + 60, temps))
    assert {t.device.device_id for t in raised if t.firing} == {f"lig-{i}" for i in range(1, 10, 2)}
    # Without the grouping field: no data.
    bare = Record(
        DeviceRef("lyon", "part-dieu", "lighting", "lig-x"), T0 + 99, {"driver_temp_c": 1e6}
    )
    assert r.update([bare]) == []


def test_peer_table_is_bounded_by_the_window() -> None:
    r = peer_rule(peer_window_s=900)
    # 5,000 devices each report once, one every 10 s of stream time (14 h): only those of
    # the last 900 s are held.
    for k in range(0, 5000, 100):
        batch = [
            Record(
                DeviceRef("lyon", f"z{j % 7}", "lighting", f"d-{j}"),
                T0 + 10 * j,
                {"driver_temp_c": 40.0},
            )
            for j in range(k, k + 100)
        ]
        r.update(batch)
        assert r.tracked_devices() <= 91
    assert r.tracked_devices() == 91
    assert sum(len(g) for g in r.groups_.values()) == 91
    assert len(r.groups_) == 7
    r.forget({f"d-{j}" for j in range(4909, 5000)})
    assert r.tracked_devices() == 0
    assert r.groups_ == {}


def test_an_old_peer_no_longer_counts() -> None:
    r = peer_rule(min_peers=5, peer_window_s=300)
    r.update(zone(5, T0, [40.0] * 5))
    late = Record(
        DeviceRef("lyon", "part-dieu", "lighting", "lig-9"), T0 + 301, {"driver_temp_c": 99.0}
    )
    assert r.update([late]) == []  # its 5 peers reported 301 s ago: out of the window


def mixed_stream() -> list[Record]:
    """Eight lights for 20 minutes; lig-2 runs very hot three cycles out of nine, and every
    seventh cycle all report from outside 10/8."""
    records: list[Record] = []
    for cycle in range(30):
        temps = normal_temps(8, cycle)
        if cycle % 9 in (3, 4, 5):
            temps[2] = 400.0
        ip = "10.1.1.1" if cycle % 7 else "172.16.0.1"
        for rec in zone(8, T0 + 40 * cycle, temps):
            temp = rec.metrics["driver_temp_c"]
            metrics = {"driver_temp_c": temp, "upload_kbps": temp * 3}
            records.append(Record(rec.device, rec.ts, metrics, info={"src_ip": ip}))
    return records


NEW_KINDS = [
    {"metric": "driver_temp_c", "op": ">", "value_from": "peers", "min_peers": 3},
    {"metric": "upload_kbps", "op": ">", "value": 100, "for_s": 90, "raise_after": 2},
    {"field": "info.src_ip", "op": "not_in_cidr", "cidrs": ["10.0.0.0/8"]},
]


@pytest.mark.parametrize("params", NEW_KINDS)
def test_batch_size_does_not_matter(params: dict[str, object]) -> None:
    records = mixed_stream()

    def run(batch: int) -> list[Transition]:
        r = make(**params)
        return [t for i in range(0, len(records), batch) for t in r.update(records[i : i + batch])]

    whole = run(len(records))
    assert any(t.firing for t in whole)
    assert run(1) == whole
    assert run(7) == whole


@pytest.mark.parametrize("params", NEW_KINDS)
def test_state_round_trip_mid_stream(params: dict[str, object]) -> None:
    records = mixed_stream()
    straight = make(**params)
    half = len(records) // 2
    first = straight.update(records[:half])
    restored = make(**params)
    restored.load_state(json.loads(json.dumps(straight.state_dict(), allow_nan=False)))
    assert restored.state_dict() == straight.state_dict()
    rest_a, rest_b = straight.update(records[half:]), restored.update(records[half:])
    assert rest_a == rest_b
    assert first or rest_a  # the stream makes the rule fire


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"op": ">", "value": 1}, "exactly one of `metric`"),
        ({"metric": "x", "field": "info.firmware", "op": "in", "values": ["a"]}, "exactly one"),
        ({"field": "info.firmware", "op": "==", "value": 1}, "compares numbers"),
        ({"field": "info.serial", "op": "in", "values": ["a"]}, "field"),
        ({"metric": "x", "op": ">"}, "needs `value`"),
        ({"metric": "x", "op": "in"}, "non-empty `values`"),
        ({"metric": "x", "op": "in", "values": []}, "non-empty `values`"),
        ({"metric": "x", "op": "in", "values": ["443"]}, "must be numbers"),
        ({"field": "info.firmware", "op": "in", "values": [5]}, "must be strings"),
        ({"metric": "x", "op": "in", "values": [True]}, "values"),
        ({"metric": "x", "op": ">", "value": 1, "values": [1]}, "only used with op 'in'"),
        ({"metric": "x", "op": "in", "values": [1], "value": 2}, "`value` is not used"),
        ({"field": "info.src_ip", "op": "in_cidr"}, "non-empty `cidrs`"),
        (
            {
                "field": "info.src_ip",
                "op": "in_cidr",
                "cidrs": ["10.0.0.0/8", "10.0.0.1/8", "nope"],
            },
            "'10.0.0.1/8', 'nope'",
        ),
        ({"field": "info.firmware", "op": "in_cidr", "cidrs": ["10.0.0.0/8"]}, "info.src_ip"),
        ({"metric": "x", "op": "in_cidr", "cidrs": ["10.0.0.0/8"]}, "info.src_ip"),
        (
            {"field": "info.src_ip", "op": "in", "values": ["a"], "cidrs": ["10.0.0.0/8"]},
            "`cidrs` is only",
        ),
        ({"metric": "x", "op": ">", "value_from": "peers", "peer_quantile": 1.0}, "peer_quantile"),
        ({"metric": "x", "op": ">", "value_from": "peers", "peer_quantile": 0}, "peer_quantile"),
        ({"metric": "x", "op": ">", "value_from": "peers", "value": 3}, "not used with value_from"),
        (
            {"field": "info.firmware", "op": "in", "values": ["a"], "value_from": "peers"},
            "comparison op",
        ),
        ({"metric": "x", "op": ">", "value": 3, "peer_quantile": 0.9}, "need value_from = 'peers'"),
        ({"metric": "x", "op": ">", "value_from": "peers", "min_peers": 0}, "min_peers"),
        ({"metric": "x", "op": ">", "value_from": "peers", "peer_key": "serial"}, "peer_key"),
        ({"metric": "x", "op": ">", "value": 1, "for_s": -1}, "for_s"),
        ({"metric": "x", "op": "contains", "value": 1}, "op"),
    ],
)
def test_invalid_combinations_are_refused_with_a_clear_message(
    params: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        registry.parse_params("threshold", params)


def test_existing_configs_are_unchanged() -> None:
    p = registry.parse_params("threshold", {"metric": "upload_kbps", "op": ">", "value": 15000})
    assert isinstance(p, ThresholdParams)
    assert (p.for_s, p.value_from, p.values, p.cidrs, p.field) == (0.0, "value", (), (), None)
    r = ThresholdRule(p)
    (t,) = r.update([Record(CAM, 1.0, {"upload_kbps": 16000.0})])
    assert t.summary == "upload_kbps crossed > 15000 on cam-1 (16000)"
    assert {"metric", "value", "peak", "condition", "op", "threshold", "points"} <= set(t.evidence)
    assert r.state_dict()["learned"].keys() == {"state_"}  # checkpoints of old versions load
