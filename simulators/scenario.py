"""Scenarios as data: TOML files that combine effect types with parameters (docs/scenarios.md).

A scenario is a list of events. Each event has a ground-truth kind, a label (`attack` or
`benign`), a window, the devices it targets and the effects it has on them. `compile_scenario`
turns a scenario and a fleet into a `StreamPlan` for the generator plus the ground truth. A new
scenario needs no code: only a file under `simulators/scenarios/` (or anywhere, by path).
"""

from __future__ import annotations

import math
import re
import tomllib
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from simulators import catalog
from simulators.anomalies import ATTACK, BENIGN, GroundTruth
from simulators.effects import (
    INF,
    BrokerAction,
    Drift,
    Effect,
    Impersonate,
    InfoChange,
    MetricOp,
    MetricValue,
    Presence,
    Reboot,
    Replay,
    Silence,
    StreamPlan,
)
from simulators.fleet import Device, Fleet
from simulators.messages import OPERATOR, Message, last_will, status, topic

LIBRARY = Path(__file__).resolve().parent / "scenarios"
PARIS = ZoneInfo("Europe/Paris")
DEFAULT_START = "2025-11-24T00:00:00+01:00"  # a Monday in Lyon
_DURATION_RE = re.compile(
    r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?"
    r"(?:(\d+(?:\.\d+)?)s)?"
)
_CLOCK_RE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


class ScenarioError(ValueError):
    """A scenario file is missing, unreadable or invalid; the message names the key."""


def parse_duration(text: str | float) -> float:
    """`90s`, `45m`, `2h30m`, `1d`, or a number of seconds."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        m = _DURATION_RE.fullmatch(text.strip())
        if not text.strip() or m is None or not any(m.groups()):
            raise ValueError(f"{text!r} is not a duration such as 90s, 45m, 2h30m or 1d")
        d, h, mi, s = (float(x) if x else 0.0 for x in m.groups())
        seconds = d * 86_400 + h * 3_600 + mi * 60 + s
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"a duration must be >= 0, got {text!r}")
    return seconds


Duration = Annotated[str | float, Field(description="90s, 45m, 2h30m, 1d or seconds")]
Value = float | tuple[float, float]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _EffectBase(_Spec):
    # Offset from the device's start in the event, and how long (default: to the event's end).
    after: Duration = 0.0
    duration: Duration | None = None
    # Active until the end of the run (a firmware change stays after the label's window).
    persist: bool = False

    @field_validator("after", "duration")
    @classmethod
    def _duration(cls, v: str | float | None) -> str | float | None:
        if v is not None:
            parse_duration(v)
        return v


class MetricsEffect(_EffectBase):
    type: Literal["scale", "add", "set"]
    metrics: dict[str, Value]

    @field_validator("metrics")
    @classmethod
    def _ranges(cls, v: dict[str, Value]) -> dict[str, Value]:
        if not v:
            raise ValueError("name at least one metric")
        for name, value in v.items():
            if isinstance(value, tuple) and value[0] > value[1]:
                raise ValueError(f"{name}: range [low, high] needs low <= high")
        return v


class DriftEffect(_EffectBase):
    type: Literal["drift"]
    metric: str
    per_hour: float


class SilenceEffect(_EffectBase):
    type: Literal["silence"]
    # The broker publishes the device's `offline` last will when it goes dark...
    will: bool = True
    # ...and the device publishes `online` when it comes back.
    online_after: bool = True


class InfoEffect(_EffectBase):
    type: Literal["info"]
    fields: dict[str, str]


class RebootEffect(_EffectBase):
    type: Literal["reboot"]


class ReplayEffect(_EffectBase):
    type: Literal["replay"]
    lag: int = Field(default=30, ge=1, le=10_000)


class ImpersonateEffect(_EffectBase):
    type: Literal["impersonate"]
    fields: dict[str, str] = Field(default_factory=dict)
    op: Literal["scale", "add", "set"] = "scale"
    metrics: dict[str, Value] = Field(default_factory=dict)
    delay_s: float = Field(default=0.4, ge=0, le=60)


class CommandsEffect(_EffectBase):
    type: Literal["commands"]
    payload: dict[str, Any]
    # Commands to all targets go out over this span (a script sweeping a district).
    spread: Duration = 0.0
    client_id: str = "operator-console"


class BruteforceEffect(_EffectBase):
    type: Literal["mqtt_bruteforce"]
    attempts: int = Field(ge=1, le=100_000)
    spread: Duration = "10m"
    # Usernames tried in turn: "targets" stands for the targeted devices' ids.
    usernames: list[str] = Field(default_factory=lambda: ["targets"])
    client_id: str = "mqtt-probe"
    src_ip: str = "127.0.0.3"


class SubscribeEffect(_EffectBase):
    type: Literal["mqtt_subscribe"]
    topics: list[str] = Field(default_factory=lambda: ["#", "$SYS/#"])
    src_ip: str = "127.0.0.4"


class CloneEffect(_EffectBase):
    type: Literal["mqtt_clone"]
    # The address a real client binds to against a broker (loopback range on a test machine)...
    src_ip: str = "127.0.0.2"
    # ...and the one the device's gateway then reports in `info.src_ip`.
    reported_ip: str = "10.250.13.37"


EffectSpec = Annotated[
    MetricsEffect
    | DriftEffect
    | SilenceEffect
    | InfoEffect
    | RebootEffect
    | ReplayEffect
    | ImpersonateEffect
    | CommandsEffect
    | BruteforceEffect
    | SubscribeEffect
    | CloneEffect,
    Field(discriminator="type"),
]


class TargetSpec(_Spec):
    kind: Literal["lighting", "mobility", "video"] | None = None
    subtype: str | None = None
    tenant: str | None = None
    # A zone slug, or "auto": one zone picked (by the seed) among those with at least
    # `min_devices` (and `count`) matching devices; the largest when none has that many.
    zone: str | None = None
    min_devices: int = Field(default=1, ge=1)
    zones: list[str] | None = None
    ids: list[str] | None = None
    count: int | None = Field(default=None, ge=1)
    fraction: float | None = Field(default=None, gt=0, le=1)
    all: bool = False
    # New devices, absent from the inventory (a rogue device joining).
    rogue: bool = False


class EventSpec(_Spec):
    kind: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    label: Literal["attack", "benign"] = ATTACK
    # When: `at` a Lyon wall-clock time "HH:MM" (the `day`-th occurrence from the run's start,
    # 0 = the first) or an ISO 8601 date-time; or `offset` from the run's start.
    at: str | None = None
    day: int = Field(default=0, ge=0)
    offset: Duration | None = None
    duration: Duration
    # Each further target starts this much later (waves of a roll-out, one device after another).
    stagger: Duration = 0.0
    targets: TargetSpec = TargetSpec()
    effects: list[EffectSpec] = Field(default_factory=list)
    detail: str = ""

    @field_validator("at")
    @classmethod
    def _at(cls, v: str | None) -> str | None:
        if v is not None and not _CLOCK_RE.fullmatch(v):
            try:
                parsed = datetime.fromisoformat(v)
            except ValueError:
                raise ValueError("must be HH:MM or an ISO 8601 date-time") from None
            if parsed.tzinfo is None:
                raise ValueError("an ISO date-time needs its UTC offset, e.g. +01:00")
        return v

    @field_validator("duration", "stagger", "offset")
    @classmethod
    def _duration(cls, v: str | float | None) -> str | float | None:
        if v is not None:
            parse_duration(v)
        return v


class RunDefaults(_Spec):
    start: str = DEFAULT_START
    devices: int = Field(default=200, ge=1, le=200_000)
    days: float = Field(default=1.0, gt=0, le=7)
    seed: int = 0


class Scenario(_Spec):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    summary: str = ""
    run: RunDefaults = RunDefaults()
    events: list[EventSpec] = Field(min_length=1)

    @property
    def attack_kinds(self) -> list[str]:
        return sorted({e.kind for e in self.events if e.label == ATTACK})

    @property
    def is_benign(self) -> bool:
        return all(e.label == BENIGN for e in self.events)


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_scenario(data: dict[str, Any], source: str) -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(tuple(e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ScenarioError(f"{source}: {problems}") from None


def library() -> list[str]:
    """The names of the scenarios shipped in simulators/scenarios/."""
    return sorted(p.stem for p in LIBRARY.glob("*.toml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A library scenario by name (`mirai-recruitment`) or a TOML file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = LIBRARY / f"{name_or_path}.toml"
        if not path.exists():
            known = ", ".join(library())
            raise ScenarioError(f"no scenario {str(name_or_path)!r} (library: {known})")
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    return parse_scenario(data, str(path))


def scenario_start(scenario: Scenario) -> float:
    return datetime.fromisoformat(scenario.run.start).timestamp()


# --- compiling ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compiled:
    """A scenario made concrete for one fleet and span."""

    scenario: Scenario
    plan: StreamPlan
    truth: tuple[GroundTruth, ...]
    # Events left out, and why (outside the span, no matching device in a small fleet).
    skipped: tuple[str, ...] = ()
    # Inventory of the run: the fleet (rogue devices are not in it).
    fleet: Fleet | None = None


@dataclass
class _Builder:
    prefix: str
    start: float
    end: float
    effects: dict[str, list[Effect]] = field(default_factory=lambda: defaultdict(list))
    scheduled: list[Message] = field(default_factory=list)
    extra: list[Device] = field(default_factory=list)
    unannounced: set[str] = field(default_factory=set)
    actions: list[BrokerAction] = field(default_factory=list)


def _event_start(ev: EventSpec, run_start: float) -> float:
    if ev.offset is not None:
        return run_start + parse_duration(ev.offset)
    if ev.at is None:
        return run_start
    m = _CLOCK_RE.fullmatch(ev.at)
    if m is None:
        return datetime.fromisoformat(ev.at).timestamp()
    local = datetime.fromtimestamp(run_start, PARIS)
    wanted = local.replace(hour=int(m[1]), minute=int(m[2]), second=0, microsecond=0)
    if wanted.timestamp() < run_start:
        wanted += timedelta(days=1)
    wanted += timedelta(days=ev.day)
    # Wall-clock arithmetic in Europe/Paris: a fold or gap at a DST change resolves by zoneinfo.
    return datetime(
        wanted.year, wanted.month, wanted.day, wanted.hour, wanted.minute, tzinfo=PARIS
    ).timestamp()


def _rng(seed: int, scenario: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed & (2**63 - 1), zlib.crc32(scenario.encode()), index])


def _select(
    t: TargetSpec, fleet: Fleet, rng: np.random.Generator
) -> tuple[list[Device], str | None]:
    """The targeted devices, or none and why."""
    if t.ids is not None:
        try:
            return [fleet.get(i) for i in t.ids], None
        except KeyError as exc:
            return [], str(exc)
    cands = [
        d
        for d in fleet
        if (t.kind is None or d.kind == t.kind)
        and (t.subtype is None or d.subtype == t.subtype)
        and (t.tenant is None or d.tenant == t.tenant)
        and (t.zone in (None, "auto") or d.zone == t.zone)
        and (t.zones is None or d.zone in t.zones)
    ]
    need = max(t.count or 1, t.min_devices)
    if t.zone == "auto":
        by_zone: dict[tuple[str, str], list[Device]] = defaultdict(list)
        for d in cands:
            by_zone[d.tenant, d.zone].append(d)
        eligible = sorted(k for k, v in by_zone.items() if len(v) >= need)
        if not eligible:
            eligible = sorted(by_zone, key=lambda k: (-len(by_zone[k]), k))[:1]
        if not eligible:
            return [], "no device matches the targets"
        cands = by_zone[eligible[int(rng.integers(len(eligible)))]]
    if not cands:
        return [], "no device matches the targets"
    if t.all or (t.count is None and t.fraction is None):
        return cands, None
    n = t.count if t.count is not None else max(1, round((t.fraction or 0) * len(cands)))
    n = min(n, len(cands))
    picks = sorted(rng.choice(len(cands), size=n, replace=False).tolist())
    return [cands[i] for i in picks], None


def _rogues(t: TargetSpec, fleet: Fleet, rng: np.random.Generator) -> list[Device]:
    """New devices shaped like the fleet's, with ids and addresses the inventory does not hold."""
    like, why = _select(
        t.model_copy(update={"rogue": False, "count": 1, "all": False, "fraction": None}),
        fleet,
        rng,
    )
    if why or not like:
        return []
    model = like[0]
    out = []
    for i in range(t.count or 1):
        serial = 90_001 + i
        device_id = f"{model.tenant}-{catalog.ID_INFIX[model.kind]}-{serial:05d}"
        while device_id in {d.device_id for d in fleet}:
            serial += 1
            device_id = f"{model.tenant}-{catalog.ID_INFIX[model.kind]}-{serial:05d}"
        out.append(
            Device(
                device_id=device_id,
                tenant=model.tenant,
                zone=model.zone,
                kind=model.kind,
                subtype=model.subtype,
                model=model.model,
                lat=model.lat,
                lon=model.lon,
                cadence_s=model.cadence_s,
                phase_s=round(float(rng.random()) * model.cadence_s, 3) % model.cadence_s,
                firmware=model.firmware,
                ip=f"10.250.{i // 254}.{i % 254 + 1}",
                noise_key=int(rng.integers(2**53)),
            )
        )
    return out


def _values(metrics: dict[str, Value]) -> tuple[MetricValue, ...]:
    out = []
    for name, v in metrics.items():
        low, high = (v, v) if isinstance(v, int | float) else v
        out.append(MetricValue(name, float(low), float(high)))
    return tuple(out)


def _usernames(spec: BruteforceEffect, targets: Sequence[Device]) -> list[str]:
    names: list[str] = []
    for u in spec.usernames:
        names += [d.device_id for d in targets] if u == "targets" else [u]
    return names or ["admin"]


def _compile_event(
    b: _Builder,
    ev: EventSpec,
    index: int,
    devices: list[Device],
    ev_start: float,
    ev_end: float,
    key: int,
) -> float:
    """Add one event's effects; return the end of its last device window."""
    stagger = parse_duration(ev.stagger)
    last_end = ev_start
    for i, device in enumerate(devices):
        d_start = ev_start + i * stagger
        d_end = d_start + (ev_end - ev_start)
        last_end = max(last_end, d_end)
        for j, spec in enumerate(ev.effects):
            s = d_start + parse_duration(spec.after)
            e = s + parse_duration(spec.duration) if spec.duration is not None else d_end
            if spec.persist:
                e = INF
            _compile_effect(b, spec, device, i, devices, s, e, key ^ (j * 7919 + i))
    return last_end


def _compile_effect(
    b: _Builder,
    spec: EffectSpec,
    device: Device,
    i: int,
    devices: list[Device],
    s: float,
    e: float,
    key: int,
) -> None:
    eff = b.effects[device.device_id]
    if isinstance(spec, MetricsEffect):
        eff.append(MetricOp(s, e, spec.type, _values(spec.metrics), key))
    elif isinstance(spec, DriftEffect):
        eff.append(Drift(s, e, spec.metric, spec.per_hour))
    elif isinstance(spec, SilenceEffect):
        eff.append(Silence(s, e))
        if spec.will:
            b.scheduled.append(last_will(b.prefix, device, s))
        if spec.online_after and e < b.end:
            b.scheduled.append(status(b.prefix, device, "online", e))
    elif isinstance(spec, InfoEffect):
        eff.append(InfoChange(s, e, tuple(spec.fields.items())))
    elif isinstance(spec, RebootEffect):
        eff.append(Reboot(s, INF))
    elif isinstance(spec, ReplayEffect):
        eff.append(Replay(s, e, spec.lag))
    elif isinstance(spec, ImpersonateEffect):
        fields = {"client_id": f"{device.device_id}-x", "src_ip": "10.250.66.6", **spec.fields}
        eff.append(
            Impersonate(
                s, e, tuple(fields.items()), spec.op, _values(spec.metrics), key, spec.delay_s
            )
        )
    elif isinstance(spec, CommandsEffect):
        at = s + parse_duration(spec.spread) * i / max(len(devices), 1)
        # The console names itself in the payload (MQTT does not tell subscribers who published).
        payload = orjson.dumps({**spec.payload, "ts": round(at, 3), "client_id": spec.client_id})
        b.scheduled.append(
            Message(
                at,
                topic(b.prefix, device, "command"),
                payload,
                device.device_id,
                1,
                False,
                OPERATOR + spec.client_id,
            )
        )
    elif isinstance(spec, BruteforceEffect):
        if i == 0:  # one campaign per event, trying every target's name
            names = _usernames(spec, devices)
            span = parse_duration(spec.spread)
            for n in range(spec.attempts):
                at = s + span * n / spec.attempts
                params: tuple[tuple[str, object], ...] = (
                    ("username", names[n % len(names)]),
                    ("client_id", f"{spec.client_id}-{n}"),
                    ("src_ip", spec.src_ip),
                )
                b.actions.append(BrokerAction(round(at, 3), "bruteforce", params))
    elif isinstance(spec, SubscribeEffect):
        params = (
            ("username", device.device_id),
            ("client_id", f"{device.device_id}-diag"),
            ("src_ip", spec.src_ip),
            ("topics", list(spec.topics)),
        )
        b.actions.append(BrokerAction(round(s, 3), "subscribe", params))
    elif isinstance(spec, CloneEffect):
        params = (
            ("username", device.device_id),
            ("client_id", device.device_id),
            ("src_ip", spec.src_ip),
        )
        b.actions.append(BrokerAction(round(s, 3), "clone", params))
        eff.append(InfoChange(s, e, (("src_ip", spec.reported_ip),)))


def compile_scenario(
    scenario: Scenario,
    fleet: Fleet,
    start_ts: float,
    end_ts: float,
    seed: int,
    *,
    topic_prefix: str = "fleet",
) -> Compiled:
    """Resolve every event's window and devices for this fleet and span; build the plan."""
    b = _Builder(topic_prefix, start_ts, end_ts)
    truth: list[GroundTruth] = []
    skipped: list[str] = []
    for index, ev in enumerate(scenario.events):
        name = f"event {index} ({ev.kind})"
        ev_start = _event_start(ev, start_ts)
        ev_end = ev_start + parse_duration(ev.duration)
        if not (start_ts <= ev_start < end_ts):
            skipped.append(f"{name}: starts outside the simulated span")
            continue
        rng = _rng(seed, scenario.name, index)
        if ev.targets.rogue:
            devices = _rogues(ev.targets, fleet, rng)
            why = None if devices else "no device to model the rogue device on"
        else:
            devices, why = _select(ev.targets, fleet, rng)
        if why is not None or not devices:
            skipped.append(f"{name}: {why}")
            continue
        key = int(rng.integers(2**62))
        last_end = _compile_event(b, ev, index, devices, ev_start, ev_end, key)
        if ev.targets.rogue:
            for d in devices:
                b.extra.append(d)
                b.unannounced.add(d.device_id)
                b.effects[d.device_id].insert(0, Presence(ev_start, last_end))
                b.scheduled.append(status(topic_prefix, d, "online", ev_start))
                if last_end < end_ts:
                    b.scheduled.append(last_will(topic_prefix, d, last_end))
        truth.append(
            GroundTruth(
                kind=ev.kind,
                devices=tuple(d.device_id for d in devices),
                start=round(ev_start, 3),
                end=round(min(last_end, end_ts), 3),
                label=ev.label,
                zones=tuple(sorted({f"{d.tenant}/{d.zone}" for d in devices})),
                scenario=scenario.name,
                detail=ev.detail,
            )
        )
    plan = StreamPlan(
        effects={k: tuple(v) for k, v in b.effects.items()},
        scheduled=tuple(sorted(b.scheduled, key=lambda m: m.ts)),
        extra_devices=tuple(b.extra),
        unannounced=frozenset(b.unannounced),
        actions=tuple(sorted(b.actions, key=lambda a: a.ts)),
    )
    return Compiled(scenario, plan, tuple(truth), tuple(skipped), fleet)
