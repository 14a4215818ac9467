"""The benchmark's figures as one table and one JSON document: each Sentinel agent's ratios
to both peers (one agent per MQTT reader, paho and native), the native reader's ratio to paho,
and issue 8's targets next to the measured figures with met / missed, per agent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from benchmarks.ingest.influx_writes import WriteResult
from benchmarks.ingest.measure import RunResult
from benchmarks.ingest.memory import MemoryResult

AGENT, NATIVE = "sentinel agent (paho)", "sentinel agent (native)"
SUB, EXPORTER = "mosquitto_sub", "prometheus-mqtt-exporter"
AGENTS = (AGENT, NATIVE)
KIB = 1024.0


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    measured: float | None
    shown: str  # the measured figure as printed
    met: bool | None  # None: not measured

    @property
    def verdict(self) -> str:
        return "not measured" if self.met is None else ("met" if self.met else "missed")


def at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


def find(runs: Sequence[RunResult], receiver: str, rate: float | None) -> RunResult | None:
    return next((r for r in runs if r.receiver == receiver and r.rate == rate), None)


def rate_label(rate: float | None) -> str:
    return "max" if rate is None else f"{rate:,.0f}/s"


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest rank (q in 0..100); None when empty."""
    if not values:
        return None
    ranked = sorted(values)
    k = max(1, -(-len(ranked) * int(q) // 100))
    return ranked[k - 1]


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


@dataclass
class Latency:
    """Detection latencies of one agent in one situation, and the alerts never seen."""

    seconds: list[float] = field(default_factory=list)
    missing: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "seconds": self.seconds,
            "missing": self.missing,
            "p50_s": percentile(self.seconds, 50),
            "p95_s": percentile(self.seconds, 95),
        }


def short(agent: str) -> str:
    """`paho`, `native`: the reader an agent's run used, for labels."""
    return agent.rsplit("(", 1)[-1].rstrip(")")


@dataclass
class Report:
    command: str
    stream: dict[str, object]
    runs: list[RunResult]
    latency: dict[str, Latency] = field(default_factory=dict)  # per agent, under the stream
    idle: dict[str, Latency] = field(default_factory=dict)  # per agent, nothing else sent
    latency_rule: str = ""
    memory: list[MemoryResult] = field(default_factory=list)
    writes: list[WriteResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def rates(self) -> list[float | None]:
        seen: list[float | None] = []
        for r in self.runs:
            if r.rate not in seen:
                seen.append(r.rate)
        return seen

    @property
    def agents(self) -> list[str]:
        return [a for a in AGENTS if any(r.receiver == a for r in self.runs)]

    def ratios(self, rate: float | None, agent: str = AGENT) -> dict[str, float | None]:
        mine, sub, exp = (find(self.runs, n, rate) for n in (agent, SUB, EXPORTER))
        return {
            "cpu_vs_exporter": ratio(_cpu(mine), _cpu(exp)),
            "cpu_vs_mosquitto_sub": ratio(_cpu(mine), _cpu(sub)),
            "throughput_vs_mosquitto_sub": ratio(_tput(mine), _tput(sub)),
            "throughput_vs_exporter": ratio(_tput(mine), _tput(exp)),
        }

    def native_vs_paho(self, rate: float | None) -> dict[str, float | None]:
        native, paho = find(self.runs, NATIVE, rate), find(self.runs, AGENT, rate)
        return {
            "cpu": ratio(_cpu(native), _cpu(paho)),
            "throughput": ratio(_tput(native), _tput(paho)),
        }

    def writes_per_s(self, writer: str) -> float | None:
        mine = [w.points_per_s for w in self.writes if w.writer == writer]
        return sum(mine) / len(mine) if mine else None

    def memory_at(self, devices: int, profile: str) -> MemoryResult | None:
        return next((m for m in self.memory if m.devices == devices and m.profile == profile), None)

    def targets(self) -> list[Target]:
        out: list[Target] = []
        for agent in self.agents:
            out += self._agent_targets(agent, f"{short(agent)}: ")
        largest = max((m.devices for m in self.memory), default=0)
        for m in (m for m in self.memory if m.devices == largest):
            out.append(
                Target(
                    f"memory per device, {m.devices:,} devices, {m.profile}",
                    "<= 1 KiB",
                    m.bytes_per_device,
                    f"{m.bytes_per_device:,.0f} B",
                    at_most(m.bytes_per_device, KIB),
                )
            )
        return out

    def _agent_targets(self, agent: str, prefix: str) -> list[Target]:
        out: list[Target] = []
        for rate in self.rates:
            r = self.ratios(rate, agent)["cpu_vs_exporter"]
            out.append(
                Target(
                    f"{prefix}ingest CPU per message, {rate_label(rate)}",
                    "<= 1.0x prometheus-mqtt-exporter",
                    r,
                    _fmt(r, ".2f", "x"),
                    at_most(r, 1.0),
                )
            )
        # Throughput is a capacity: judged flat out, else at the highest fixed rate.
        fixed = [x for x in self.rates if x is not None]
        rate = None if None in self.rates or not fixed else max(fixed)
        t = self.ratios(rate, agent)["throughput_vs_mosquitto_sub"]
        run = find(self.runs, agent, rate)
        lossless = run is not None and run.lost == 0
        met = at_least(t, 0.8)
        out.append(
            Target(
                f"{prefix}throughput with zero loss, {rate_label(rate)}",
                ">= 0.8x mosquitto_sub",
                t,
                _fmt(t, ".2f", "x") + ("" if lossless or run is None else f", {run.lost:,} lost"),
                None if met is None else met and lossless,
            )
        )
        fixed_rate = self.stream.get("fixed_rate")
        under = f"under {fixed_rate:,.0f} msg/s" if isinstance(fixed_rate, float) else "under load"
        for when, lat in ((under, self.latency.get(agent)), ("idle agent", self.idle.get(agent))):
            if lat is None:
                continue
            p95 = percentile(lat.seconds, 95)
            out.append(
                Target(
                    f"{prefix}detection latency p95, {when}",
                    "<= 1 s",
                    p95,
                    _fmt(p95, ".2f", " s") + (f", {lat.missing} never seen" if lat.missing else ""),
                    None if p95 is None else p95 <= 1.0 and lat.missing == 0,
                )
            )
        return out

    def lines(self) -> list[str]:
        s = self.stream
        out = [
            f"Sentinel ingest benchmark: {s['messages']:,} simulator messages from "
            f"{s['devices']:,} devices ({s['bytes']:,} payload bytes), QoS 1 through "
            f"{s['broker']}",
            f"command: {self.command}",
            "",
            f"{'receiver':<26}{'rate':>9}{'received':>11}{'lost':>8}{'CPU µs/msg':>12}"
            f"{'msg/s':>10}{'CPU s':>8}{'wall s':>8}  notes",
        ]
        for r in self.runs:
            out.append(
                f"{r.receiver:<26}{rate_label(r.rate):>9}{r.received:>11,}{r.lost:>8,}"
                f"{_fmt(r.cpu_us_per_msg, '.1f'):>12}{_fmt(r.msgs_per_s, ',.0f'):>10}"
                f"{r.cpu_s:>8.2f}{r.wall_s:>8.1f}  {self._note(r)}"
            )
        out += [
            "",
            f"{'Sentinel ÷ peer':<42}" + "".join(f"{rate_label(x):>10}" for x in self.rates),
        ]
        labels = {
            "cpu_vs_exporter": "CPU/msg ÷ exporter",
            "cpu_vs_mosquitto_sub": "CPU/msg ÷ mosquitto_sub",
            "throughput_vs_mosquitto_sub": "msg/s ÷ mosquitto_sub",
            "throughput_vs_exporter": "msg/s ÷ exporter",
        }
        for agent in self.agents:
            for key, label in labels.items():
                cells = "".join(
                    f"{_fmt(self.ratios(x, agent)[key], '.2f', 'x'):>10}" for x in self.rates
                )
                out.append(f"{short(agent) + ': ' + label:<42}{cells}")
        if len(self.agents) == len(AGENTS):
            for key, label in (("cpu", "CPU/msg"), ("throughput", "msg/s")):
                cells = "".join(
                    f"{_fmt(self.native_vs_paho(x)[key], '.2f', 'x'):>10}" for x in self.rates
                )
                out.append(f"{'native ÷ paho: ' + label:<42}{cells}")
        out += ["", f"detection latency, first anomalous message published -> alert in "
                f"Alertmanager ({self.latency_rule}):"]  # fmt: skip
        for agent in self.agents:
            for when, lat in (
                ("under the fixed-rate stream", self.latency.get(agent)),
                ("idle agent", self.idle.get(agent)),
            ):
                if lat is None:
                    continue
                values = lat.seconds
                out.append(
                    f"  {short(agent) + ', ' + when:<36} p50 "
                    f"{_fmt(percentile(values, 50), '.3f', ' s')}, "
                    f"p95 {_fmt(percentile(values, 95), '.3f', ' s')}, "
                    f"max {_fmt(max(values, default=None), '.3f', ' s')} "
                    f"({len(values)} seen, {lat.missing} never seen)"
                )
        for m in self.memory:
            states = sum(m.detector_states.values())
            out.append(
                f"memory, {m.devices:>9,} devices, {m.profile:<9}: RSS +"
                f"{(m.rss_after - m.rss_before) / KIB / KIB:,.1f} MiB = "
                f"{m.bytes_per_device:,.0f} B/device ({m.admitted:,} admitted, {states:,} "
                f"detector states)"
            )
        w, c = self.writes_per_s("InfluxWriter"), self.writes_per_s("curl")
        if self.writes:
            out.append(
                f"InfluxDB writes ({self.writes[0].points:,} points, batches of "
                f"{self.stream.get('batch_size')}): InfluxWriter {_fmt(w, ',.0f')} points/s, "
                f"curl {_fmt(c, ',.0f')} points/s, ratio {_fmt(ratio(w, c), '.2f', 'x')}"
            )
        out += ["", f"{'target':<50}{'goal':<34}{'measured':<22}verdict"]
        out += [f"{t.name:<50}{t.goal:<34}{t.shown:<22}{t.verdict}" for t in self.targets()]
        out += [f"note: {n}" for n in self.notes]
        return out

    def _note(self, r: RunResult) -> str:
        d = r.details
        parts = [f"published {r.published:,} in {r.publish_s:.1f} s"]
        if "influx_points" in d:
            parts.append(f"InfluxDB {d['influx_points']:,.0f}/{d['influx_expected']:,.0f} points")
        if d.get("spooled_points"):
            parts.append(
                f"{d['spooled_points']:,.0f} via the spool, drained {d.get('drain_s', 0):.0f} s "
                "after the run"
            )
        if "rss_bytes" in d:
            parts.append(f"RSS {d['rss_bytes'] / KIB / KIB:,.0f} MiB")
        if d.get("alerts"):
            parts.append(f"alerts {d['alerts']:,.0f}")
        if d.get("rejected"):
            parts.append(f"rejected {d['rejected']:,.0f}")
        if d.get("not_success"):
            parts.append(f"not parsed {d['not_success']:,.0f}")
        return "; ".join(parts)

    def to_json(self) -> dict[str, object]:
        return {
            "command": self.command,
            "stream": self.stream,
            "runs": [r.to_json() for r in self.runs],
            "ratios": {
                short(agent): {rate_label(x): self.ratios(x, agent) for x in self.rates}
                for agent in self.agents
            },
            "native_vs_paho": {rate_label(x): self.native_vs_paho(x) for x in self.rates},
            "latency": {
                "rule": self.latency_rule,
                "under_load": {short(a): lat.to_json() for a, lat in self.latency.items()},
                "idle": {short(a): lat.to_json() for a, lat in self.idle.items()},
            },
            "memory": [asdict(m) for m in self.memory],
            "influx_writes": [{**asdict(w), "points_per_s": w.points_per_s} for w in self.writes],
            "targets": [{**asdict(t), "verdict": t.verdict} for t in self.targets()],
            "notes": self.notes,
        }


def _cpu(r: RunResult | None) -> float | None:
    return r.cpu_us_per_msg if r else None


def _tput(r: RunResult | None) -> float | None:
    return r.msgs_per_s if r else None
