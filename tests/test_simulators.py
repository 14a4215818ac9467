"""The simulated fleet and its message stream: determinism, order, wire format, anomaly, files."""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulators import generator
from simulators.anomalies import AnomalySpec, CameraUploadSurge, GroundTruth
from simulators.effects import Replay, Silence, StreamPlan
from simulators.fleet import Device, Fleet, build_fleet
from simulators.generator import generate
from simulators.inventory import load_inventory, write_inventory
from simulators.messages import Message, status

PARIS = ZoneInfo("Europe/Paris")

# --- The wire-format contract (docs/wire-format.md), written independently of the generator. ---

TENANT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
ZONE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}")
DEVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
METRIC_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Every device also reports its network behaviour since its previous report.
NET = {
    "net_bytes_out",
    "net_bytes_in",
    "net_pkts_out",
    "net_conns",
    "net_dst_ips",
    "net_dst_ports",
    "net_new_dsts",
    "net_telnet_attempts",
    "net_dns_queries",
}
METRIC_SETS = {
    "lighting": [{"on", "dim_pct", "power_w", "lux", "driver_temp_c", "burning_hours"} | NET],
    "mobility": [
        {"vehicles", "speed_kmh", "occupancy_pct"} | NET,
        {"occupied"} | NET,
        {"bikes_available", "docks_free"} | NET,
    ],
    "video": [{"bitrate_kbps", "fps", "upload_kbps", "storage_pct", "uptime_s"} | NET],
}
INFO_KEYS = {"client_id", "src_ip", "firmware", "config_hash", "model"}
# Plausible ranges (inclusive) for a healthy device.
RANGES = {
    "on": (0, 1),
    "dim_pct": (0, 100),
    "power_w": (0, 200),
    "lux": (0, 60),
    "driver_temp_c": (-25, 80),
    "burning_hours": (0, 100_000),
    "vehicles": (0, 300),
    "speed_kmh": (0, 90),
    "occupancy_pct": (0, 100),
    "occupied": (0, 1),
    "bikes_available": (0, 60),
    "docks_free": (0, 60),
    "bitrate_kbps": (1_000, 8_000),
    "fps": (1, 30),
    "upload_kbps": (1_000, 8_500),
    "storage_pct": (0, 100),
    "uptime_s": (0, 60 * 86_400),
    "net_bytes_out": (100, 12_000_000),
    "net_bytes_in": (50, 250_000),
    "net_pkts_out": (1, 10_000),
    "net_conns": (1, 4),
    "net_dst_ips": (1, 4),
    "net_dst_ports": (1, 4),
    "net_new_dsts": (0, 1),
    "net_telnet_attempts": (0, 0),
    "net_dns_queries": (0, 1),
}
INTEGER_METRICS = {
    "on",
    "occupied",
    "vehicles",
    "bikes_available",
    "docks_free",
    "fps",
    "uptime_s",
    *NET,
}


def is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_message(m: Message, prefix: str = "fleet", healthy: bool = True) -> dict[str, Any]:
    """Assert that `m` follows the wire format; return its decoded payload."""
    levels = m.topic.split("/")
    assert levels[:-5] == prefix.split("/"), m.topic
    tenant, zone, kind, device_id, leaf = levels[-5:]
    assert TENANT_RE.fullmatch(tenant), m.topic
    assert ZONE_RE.fullmatch(zone), m.topic
    assert kind in METRIC_SETS, m.topic
    assert DEVICE_RE.fullmatch(device_id), m.topic
    assert m.device_id == device_id
    assert m.qos == 1
    payload = orjson.loads(m.payload)
    assert isinstance(payload, dict)
    if leaf == "status":
        assert m.retain
        assert payload["state"] in ("online", "offline")
        assert is_number(payload["ts"])
        return payload
    assert leaf == "telemetry", m.topic
    assert not m.retain
    assert len(m.payload) <= 4096
    assert b" " not in m.payload  # compact JSON
    assert payload.get("device_id", device_id) == device_id
    info = payload["info"]
    assert set(info) == INFO_KEYS
    assert all(isinstance(v, str) and v for v in info.values())
    if healthy:
        assert info["client_id"] == device_id
    assert is_number(payload["ts"])
    assert math.isfinite(payload["ts"])
    assert round(payload["ts"], 3) == payload["ts"]
    assert isinstance(payload["seq"], int)
    assert not isinstance(payload["seq"], bool)
    assert payload["seq"] >= 0
    metrics = payload["metrics"]
    assert isinstance(metrics, dict)
    assert 1 <= len(metrics) <= 64
    assert set(metrics) in METRIC_SETS[kind], (kind, sorted(metrics))
    for name, value in metrics.items():
        assert METRIC_RE.fullmatch(name)
        assert is_number(value), (name, value)
        assert math.isfinite(value), (name, value)
        if name in INTEGER_METRICS:
            assert isinstance(value, int), (name, value)
        low, high = RANGES[name]
        if healthy:
            assert low <= value <= high, (device_id, name, value)
    return payload


# --- helpers ---------------------------------------------------------------------------------


def at(local: str) -> float:
    """Unix time of a Lyon wall-clock time, e.g. '2025-12-15 00:30'."""
    return datetime.fromisoformat(local).replace(tzinfo=PARIS).timestamp()


def telemetry(messages: Iterable[Message]) -> list[tuple[Message, dict[str, Any]]]:
    return [(m, orjson.loads(m.payload)) for m in messages if m.topic.endswith("/telemetry")]


def by_device(messages: Iterable[Message]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m, p in telemetry(messages):
        out[m.device_id].append(p)
    return out


START = at("2025-11-24 10:00")  # a Monday


@pytest.fixture(scope="module")
def lyon() -> Fleet:
    return build_fleet(200, seed=7)


# --- fleet -----------------------------------------------------------------------------------


def test_fleet_ids_unique_well_formed_and_mixed() -> None:
    fleet = build_fleet(1_000, seed=1)
    ids = [d.device_id for d in fleet]
    assert len(set(ids)) == len(ids) == 1_000
    kinds = Counter(d.kind for d in fleet)
    assert kinds == {"lighting": 500, "mobility": 300, "video": 200}
    infix = {"lighting": "lum", "mobility": "mob", "video": "cam"}
    for d in fleet:
        assert DEVICE_RE.fullmatch(d.device_id)
        assert re.fullmatch(rf"{d.tenant}-{infix[d.kind]}-\d{{5}}", d.device_id)
        assert TENANT_RE.fullmatch(d.tenant)
        assert ZONE_RE.fullmatch(d.zone)
        assert d.cadence_s == {"lighting": 60, "mobility": 30, "video": 10}[d.kind]
        assert 0 <= d.phase_s < d.cadence_s
        assert re.fullmatch(r"10\.\d{1,3}\.\d{1,3}\.\d{1,3}", d.ip)
        # Within the Métropole de Lyon.
        assert 45.65 < d.lat < 45.81
        assert 4.77 < d.lon < 4.93
    assert len({d.ip for d in fleet}) == 1_000
    assert {d.tenant for d in fleet} == {"lyon", "villeurbanne", "venissieux"}
    subtypes = {d.subtype for d in fleet if d.kind == "mobility"}
    assert subtypes == {"traffic_counter", "parking_sensor", "bike_dock"}


@given(n=st.integers(0, 40), seed=st.integers(0, 2**63))
@settings(max_examples=40, deadline=None)
def test_fleet_size_and_cameras(n: int, seed: int) -> None:
    fleet = build_fleet(n, seed)
    assert len(fleet) == n
    if n >= 3:
        assert fleet.of_kind("video")
    assert fleet == build_fleet(n, seed)


def test_fleet_rejects_duplicates() -> None:
    d = build_fleet(1, 0).devices[0]
    with pytest.raises(ValueError, match="duplicate"):
        Fleet((d, d))


# --- message stream ----------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_differs() -> None:
    def stream(fleet_seed: int, seed: int) -> list[Message]:
        return list(generate(build_fleet(60, fleet_seed), START, START + 600, None, seed))

    first = stream(3, 11)
    assert first == stream(3, 11)
    assert first != stream(3, 12)  # same fleet, other noise
    assert first != stream(4, 11)  # other fleet


def test_hardware_does_not_change_with_the_run_seed(lyon: Fleet) -> None:
    def burning(seed: int) -> dict[tuple[str, int], float]:
        return {
            (m.device_id, p["seq"]): p["metrics"]["burning_hours"]
            for m, p in telemetry(generate(lyon, START, START + 600, None, seed))
            if "/lighting/" in m.topic
        }

    first, second = burning(1), burning(2)
    common = first.keys() & second.keys()
    assert len(common) > 0.9 * len(first)
    assert all(first[k] == second[k] for k in common)


def test_status_first_then_telemetry_in_time_order(lyon: Fleet) -> None:
    messages = list(generate(lyon, START, START + 900, None, 1))
    status = messages[: len(lyon)]
    assert all(m.topic.endswith("/status") and m.retain and m.ts == START for m in status)
    assert {m.device_id for m in status} == {d.device_id for d in lyon}
    rest = messages[len(lyon) :]
    assert all(m.topic.endswith("/telemetry") for m in rest)
    times = [m.ts for m in messages]
    assert times == sorted(times)
    assert rest[0].ts >= START
    assert rest[-1].ts < START + 900


def test_every_payload_follows_the_wire_format(lyon: Fleet) -> None:
    for m in generate(lyon, START, START + 900, None, 1):
        check_message(m)


def test_topic_prefix_is_configurable(lyon: Fleet) -> None:
    for m in generate(lyon, START, START + 60, None, 1, topic_prefix="city/lyon-sim"):
        check_message(m, prefix="city/lyon-sim")
    with pytest.raises(ValueError, match="prefix"):
        generate(lyon, START, START + 60, None, 1, topic_prefix="lyon/#")


@given(
    n=st.integers(0, 30),
    fleet_seed=st.integers(0, 2**32),
    seed=st.integers(-(2**63), 2**64 - 1),
    start=st.floats(at("2001-01-01 00:00"), at("2098-12-31 00:00")),
    span=st.floats(0, 400),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_fleet_any_time_valid_ordered_stream(
    n: int, fleet_seed: int, seed: int, start: float, span: float
) -> None:
    fleet = build_fleet(n, fleet_seed)
    messages = list(generate(fleet, start, start + span, None, seed))
    assert [m.ts for m in messages] == sorted(m.ts for m in messages)
    last_seq: dict[str, int] = {}
    for m in messages:
        payload = check_message(m)
        if m.topic.endswith("/telemetry"):
            assert start <= m.ts < start + span
            assert abs(payload["ts"] - m.ts) <= 0.5 + 1e-6
            assert payload["seq"] > last_seq.get(m.device_id, -1)
            last_seq[m.device_id] = payload["seq"]


def test_seq_counts_reports_and_few_go_missing() -> None:
    fleet = build_fleet(300, seed=5)
    streams = by_device(generate(fleet, START, START + 3_600, None, 2))
    expected = sum(3_600 // d.cadence_s for d in fleet)
    received = sum(len(s) for s in streams.values())
    assert 0.985 * expected <= received <= 0.999 * expected  # ~0.5 % missing
    for d in fleet:
        seqs = [p["seq"] for p in streams[d.device_id]]
        # A missing report leaves a gap in seq: seq numbers the report slots from 0.
        assert seqs == sorted(set(seqs))
        assert set(seqs) <= set(range(3_600 // d.cadence_s))


def test_clock_jitter_is_a_few_hundred_ms(lyon: Fleet) -> None:
    offsets = [p["ts"] - m.ts for m, p in telemetry(generate(lyon, START, START + 600, None, 1))]
    assert max(abs(o) for o in offsets) <= 0.5 + 1e-6
    rms = math.sqrt(sum(o * o for o in offsets) / len(offsets))
    assert 0.05 < rms < 0.3


def test_empty_span_and_empty_fleet() -> None:
    assert list(generate(build_fleet(0, 0), START, START + 60, None, 0)) == []
    fleet = build_fleet(5, 0)
    assert all(m.retain for m in generate(fleet, START, START, None, 0))
    with pytest.raises(ValueError, match="start_ts"):
        generate(fleet, START, START - 1, None, 0)
    with pytest.raises(ValueError, match="simulated time"):
        generate(fleet, 0.0, 60.0, None, 0)


# --- telemetry models ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "on"),
    [
        ("2025-12-15 00:30", 1),
        ("2025-12-15 12:00", 0),
        ("2025-12-15 19:00", 1),
        ("2025-06-21 01:30", 1),
        ("2025-06-21 12:00", 0),
        ("2025-06-21 20:30", 0),  # sunset in Lyon is at ~21:33 on the solstice
    ],
)
def test_lights_on_at_night_off_at_noon(lyon: Fleet, local: str, on: int) -> None:
    lights = [
        p["metrics"]
        for m, p in telemetry(generate(lyon, at(local), at(local) + 120, None, 3))
        if "/lighting/" in m.topic
    ]
    assert len(lights) >= len(lyon.of_kind("lighting"))
    assert {x["on"] for x in lights} == {on}
    for x in lights:
        if on:
            # Full power in the evening, the dimming programme after 23:00.
            assert x["dim_pct"] == (100 if local.endswith("19:00") else pytest.approx(50, abs=10))
            assert x["power_w"] > 10
            assert x["lux"] > 3
        else:
            assert x["dim_pct"] == 0
            assert x["power_w"] < 2
            assert x["lux"] == 0


def test_light_power_follows_dimming_and_burning_hours_only_grow() -> None:
    fleet = build_fleet(60, seed=9)
    start = at("2025-03-10 16:00")  # through dusk, the dimming, dawn and noon (UTC cycle edge)
    streams = by_device(generate(fleet, start, start + 22 * 3_600, None, 4))
    for d in fleet.of_kind("lighting"):
        reports = streams[d.device_id]
        hours = [p["metrics"]["burning_hours"] for p in reports]
        assert hours == sorted(hours)
        # One night of burning: between 10 and 13 hours in March.
        assert 10 <= hours[-1] - hours[0] <= 13
        full = [p["metrics"]["power_w"] for p in reports if p["metrics"]["dim_pct"] == 100]
        dimmed = [p["metrics"]["power_w"] for p in reports if 0 < p["metrics"]["dim_pct"] < 100]
        assert min(full) > max(dimmed)


def traffic(fleet: Fleet, local: str, minutes: int = 30) -> int:
    start = at(local)
    return sum(
        p["metrics"]["vehicles"]
        for m, p in telemetry(generate(fleet, start, start + 60 * minutes, None, 5))
        if "vehicles" in p["metrics"]
    )


def test_rush_hour_traffic_beats_3am_and_weekends() -> None:
    fleet = build_fleet(300, seed=2)
    morning, evening = traffic(fleet, "2025-11-25 08:00"), traffic(fleet, "2025-11-25 17:30")
    night = traffic(fleet, "2025-11-25 03:00")
    sunday_morning = traffic(fleet, "2025-11-30 08:00")
    assert morning > 8 * night
    assert evening > 8 * night
    assert morning > 2 * sunday_morning


def test_cameras_stream_more_by_day_and_upload_what_they_stream(lyon: Fleet) -> None:
    def cameras(local: str) -> list[dict[str, Any]]:
        start = at(local)
        return [
            p["metrics"]
            for m, p in telemetry(generate(lyon, start, start + 300, None, 6))
            if "/video/" in m.topic
        ]

    day, night = cameras("2025-06-21 13:00"), cameras("2025-06-21 02:00")
    mean_day = sum(x["bitrate_kbps"] for x in day) / len(day)
    mean_night = sum(x["bitrate_kbps"] for x in night) / len(night)
    assert 2_000 < mean_night < mean_day < 6_000
    for x in day + night:
        assert 0.95 < x["upload_kbps"] / x["bitrate_kbps"] < 1.08
        assert x["fps"] <= 25
    assert Counter(x["fps"] for x in day + night).most_common(1)[0][0] == 25


# --- anomaly ---------------------------------------------------------------------------------


def test_upload_surge_only_inside_ground_truth_window(lyon: Fleet) -> None:
    spec = AnomalySpec(device_id=None, start_offset_s=1_800, duration_s=1_200, factor=10.0)
    truth = spec.resolve(lyon, START).truth
    camera = lyon.of_kind("video")[0]
    assert (truth.kind, truth.device_id) == ("camera_upload_surge", camera.device_id)
    assert (truth.tenant, truth.zone) == (camera.tenant, camera.zone)
    assert (truth.start_ts, truth.end_ts) == (START + 1_800, START + 3_000)

    normal = list(generate(lyon, START, START + 3_600, None, 8))
    attacked = list(generate(lyon, START, START + 3_600, [spec], 8))
    assert len(normal) == len(attacked)
    inside = 0
    for a, b in zip(normal, attacked, strict=True):
        if a.device_id != camera.device_id or a.topic.endswith("/status"):
            assert a == b
            continue
        pa, pb = orjson.loads(a.payload), orjson.loads(b.payload)
        assert pb["metrics"]["bitrate_kbps"] == pa["metrics"]["bitrate_kbps"]
        ratio = pb["metrics"]["upload_kbps"] / pa["metrics"]["bitrate_kbps"]
        if truth.start_ts <= pb["ts"] < truth.end_ts:
            inside += 1
            assert ratio >= spec.factor / 2
            check_message(b, healthy=False)
        else:
            assert 0.95 < ratio < 1.08
            check_message(b)
    assert inside >= 100  # 1,200 s at one report every 10 s, less a few missing


def test_anomaly_on_a_chosen_camera_and_invalid_targets(lyon: Fleet) -> None:
    camera = lyon.of_kind("video")[-1]
    chosen = AnomalySpec(camera.device_id, 0, 60, factor=4).resolve(lyon, START)
    assert isinstance(chosen, CameraUploadSurge)
    assert chosen.factor == 4
    assert chosen.truth.device_id == camera.device_id
    with pytest.raises(ValueError, match="not a camera"):
        AnomalySpec(lyon.of_kind("lighting")[0].device_id, 0, 60).resolve(lyon, START)
    with pytest.raises(KeyError):
        AnomalySpec("nobody-00001", 0, 60).resolve(lyon, START)
    with pytest.raises(ValueError, match="no camera"):
        AnomalySpec(None, 0, 60).resolve(build_fleet(2, 0), START)
    with pytest.raises(ValueError, match="duration_s"):
        AnomalySpec(None, 0, 0)


def test_ground_truth_is_one_json_line() -> None:
    truth = GroundTruth(
        "camera_upload_surge", ("lyon-cam-00001",), 1.5, 2.25, zones=("lyon/gerland",)
    )
    line = truth.to_json()
    assert "\n" not in line
    assert orjson.loads(line) == {
        "kind": "camera_upload_surge",
        "devices": ["lyon-cam-00001"],
        "start": 1.5,
        "end": 2.25,
        "label": "attack",
        "zones": ["lyon/gerland"],
        "scenario": "",
        "detail": "",
    }
    assert GroundTruth.from_json(line) == truth
    assert (truth.device_id, truth.tenant, truth.zone) == ("lyon-cam-00001", "lyon", "gerland")
    # Labels written by the skeleton (one device per line) still load.
    old = (
        '{"kind": "camera_upload_surge", "device_id": "lyon-cam-00001", "tenant": "lyon", '
        '"zone": "gerland", "start_ts": 1.5, "end_ts": 2.25}'
    )
    assert GroundTruth.from_json(old) == truth
    with pytest.raises(ValueError, match="label"):
        GroundTruth("x", (), 0.0, 1.0, label="maybe")


# --- inventory -----------------------------------------------------------------------------------


def test_inventory_round_trip(tmp_path: Path, lyon: Fleet) -> None:
    path = tmp_path / "inventory.json"
    write_inventory(lyon, path)
    raw = orjson.loads(path.read_bytes())
    assert isinstance(raw, list)
    assert len(raw) == len(lyon)
    assert set(raw[0]) == {f.name for f in dataclasses.fields(Device)}
    loaded = load_inventory(path)
    assert loaded == lyon
    assert list(generate(loaded, START, START + 120, None, 1)) == list(
        generate(lyon, START, START + 120, None, 1)
    )
    write_inventory(Fleet(()), path)
    assert load_inventory(path) == Fleet(())


def test_inventory_rejects_bad_entries(tmp_path: Path, lyon: Fleet) -> None:
    path = tmp_path / "inventory.json"
    entry = dataclasses.asdict(lyon.devices[0])
    bad_files: list[object] = [{"devices": []}, [{**entry, "extra": 1}], [{**entry, "lat": "x"}]]
    for bad in bad_files:
        path.write_bytes(orjson.dumps(bad))
        with pytest.raises(ValueError, match=str(path)):
            load_inventory(path)


# --- a plan in the stream ----------------------------------------------------------------------


def test_batches_never_show_in_a_planned_stream(
    lyon: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dropped reports, replayed ones and scheduled messages (at reports' times, at a dropped
    report's time, before the first report, after the last): the same stream whatever the batch
    size, and a scheduled message comes right before the first message sent at or after it."""
    end = START + 600
    plain = [m for m in generate(lyon, START, end, None, 3) if m.topic.endswith("/telemetry")]
    silent, replayed, other = [d for d in lyon if d.kind == "video"][:3]
    silent_sent = [m.ts for m in plain if m.device_id == silent.device_id]
    window = (silent_sent[5], silent_sent[20])  # payload ts is within 0.5 s of the send time
    # Reports in a row: with 7 per batch, some of them end a batch.
    in_a_row = sorted({m.ts for m in plain[len(plain) // 3 :]})[:15]
    scheduled = [
        status("fleet", other, "offline", at)
        for at in (START + 0.0005, *in_a_row, silent_sent[10], end - 0.0005)
    ]
    plan = StreamPlan(
        effects={
            silent.device_id: (Silence(*window),),
            replayed.device_id: (Replay(START, math.inf, lag=2),),
        },
        scheduled=tuple(sorted(scheduled, key=lambda m: m.ts)),
    )
    stream = list(generate(lyon, START, end, None, 3, plan=plan))
    monkeypatch.setattr(generator, "BATCH_SIZE", 7)
    assert list(generate(lyon, START, end, None, 3, plan=plan)) == stream

    assert [m.ts for m in stream] == sorted(m.ts for m in stream)
    sent = [m for m in stream if m.topic.endswith("/telemetry")]
    for s in scheduled:
        i = stream.index(s)
        before = [m.ts for m in stream[:i] if m.topic.endswith("/telemetry")]
        after = [m.ts for m in stream[i + 1 :] if m.topic.endswith("/telemetry")]
        assert all(t < s.ts for t in before)
        assert all(t >= s.ts for t in after)
    assert len(stream) == len(lyon) + len(scheduled) + len(sent)

    def payloads(messages: list[Message], device: Device) -> list[bytes]:
        return [m.payload for m in messages if m.device_id == device.device_id]

    silenced = [
        p for p in payloads(plain, silent) if window[0] <= orjson.loads(p)["ts"] < window[1]
    ]
    assert len(silenced) == 15
    assert payloads(sent, silent) == [p for p in payloads(plain, silent) if p not in silenced]
    genuine = payloads(plain, replayed)
    expected = genuine[:2] + [
        x for i in range(2, len(genuine)) for x in (genuine[i], genuine[i - 2])
    ]
    assert payloads(sent, replayed) == expected
    others = {silent.device_id, replayed.device_id}
    assert [m for m in sent if m.device_id not in others] == [
        m for m in plain if m.device_id not in others
    ]


# --- scale ---------------------------------------------------------------------------------------


def test_ten_thousand_devices_one_hour() -> None:
    """Measured, not asserted: run with `-s` to see the rate."""
    fleet = build_fleet(10_000, seed=42)
    began = time.perf_counter()
    count = sum(1 for _ in generate(fleet, START, START + 3_600, None, 1))
    elapsed = time.perf_counter() - began
    expected = len(fleet) + sum(3_600 // d.cadence_s for d in fleet)
    assert 0.99 * expected < count <= expected
    print(
        f"\n10,000 devices, 1 simulated hour: {count:,} messages in {elapsed:.1f} s "
        f"= {count / elapsed:,.0f} msg/s"
    )


def test_unix_day_of_week_sanity() -> None:
    # START is a Monday morning in Lyon: guards the helpers above.
    assert datetime.fromtimestamp(START, UTC).astimezone(PARIS).strftime("%a %H:%M") == "Mon 10:00"
