"""Threshold rule with hysteresis: N consecutive points past the line raise, M back clear.

The field compared is a metric (`metric`) or an info field (`field = "info.src_ip"`). The
condition is a comparison with a fixed `value`, a comparison with the peer group's quantile
(`value_from = "peers"`), membership of a set (`in`/`not_in` with `values`) or of a set of
networks (`in_cidr`/`not_in_cidr` with `cidrs`). `for_s` also asks the condition to have held
for that many seconds of the device's own report times before it raises (Prometheus's `for`).
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import math
import operator
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import Field, StrictFloat, StrictInt, StrictStr, StringConstraints, model_validator

from detectors.base import METRIC_NAME, Detector, DetectorParams
from detectors.columns import Columns
from detectors.identity import InfoField
from detectors.model import DeviceRef, EvidenceValue, Record, Transition
from detectors.registry import register
from detectors.streams import StreamClock, forget_devices

Comparison = Literal[">", ">=", "<", "<=", "==", "!="]
SetOp = Literal["in", "not_in"]
CidrOp = Literal["in_cidr", "not_in_cidr"]
Op = Comparison | SetOp | CidrOp

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_INFO_FIELD = r"^info\.(" + "|".join(get_args(InfoField)) + r")$"
_MAX_SET = 10_000  # entries of `values` or `cidrs`
_SHOWN_SET = 4  # a set up to this size is written out in the evidence; larger ones by size
_PEER_PARAMS = ("peer_quantile", "peer_factor", "min_peers", "peer_key", "peer_window_s")

MetricName = Annotated[str, StringConstraints(pattern=METRIC_NAME)]
InfoPath = Annotated[str, StringConstraints(pattern=_INFO_FIELD)]
SetValue = StrictInt | StrictFloat | Annotated[StrictStr, StringConstraints(min_length=1)]


class ThresholdParams(DetectorParams):
    metric: MetricName | None = None
    field: InfoPath | None = None
    op: Op
    value: float | None = None
    values: tuple[SetValue, ...] = Field(default=(), max_length=_MAX_SET)
    cidrs: tuple[str, ...] = Field(default=(), max_length=_MAX_SET)
    raise_after: int = Field(default=1, ge=1, le=10_000)
    clear_after: int = Field(default=1, ge=1, le=10_000)
    for_s: float = Field(default=0.0, ge=0, le=30 * 86_400)
    value_from: Literal["value", "peers"] = "value"
    peer_quantile: float = Field(default=0.99, gt=0, lt=1)
    peer_factor: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    min_peers: int = Field(default=5, ge=1, le=100_000)
    peer_key: InfoField | None = None
    peer_window_s: float = Field(default=900.0, gt=0, le=30 * 86_400)

    @model_validator(mode="after")
    def _check_combination(self) -> ThresholdParams:
        if (self.metric is None) == (self.field is None):
            raise ValueError("give exactly one of `metric` (a metric) or `field` ('info.<key>')")
        on = f"metric {self.metric!r}" if self.metric else f"field {self.field!r}"
        peers = self.value_from == "peers"
        if not peers and (unused := [k for k in _PEER_PARAMS if k in self.model_fields_set]):
            raise ValueError(f"{', '.join(unused)} need value_from = 'peers'")
        if self.op in get_args(Comparison):
            if self.metric is None:
                raise ValueError(
                    f"op {self.op!r} compares numbers: use `metric`, or `in`/`not_in`"
                    f" with `values` for {on}"
                )
            if peers and self.value is not None:
                raise ValueError("`value` is not used with value_from = 'peers': drop it")
            if not peers and self.value is None:
                raise ValueError(f"op {self.op!r} needs `value` (or value_from = 'peers')")
            if self.value is not None and math.isnan(self.value):
                raise ValueError("`value` must be a number, not NaN")
        elif peers:
            raise ValueError(f"value_from = 'peers' needs a comparison op, not {self.op!r}")
        elif self.value is not None:
            raise ValueError(f"`value` is not used with op {self.op!r}")
        self._check_sets(on)
        return self

    def _check_sets(self, on: str) -> None:
        if self.op in get_args(SetOp):
            if not self.values:
                raise ValueError(f"op {self.op!r} needs a non-empty `values` list")
            numbers = self.metric is not None
            wrong = [v for v in self.values if isinstance(v, str) == numbers]
            if wrong:
                kind = "numbers" if numbers else "strings"
                raise ValueError(f"`values` for {on} must be {kind}, not {wrong[:3]!r}")
            if any(isinstance(v, float) and not math.isfinite(v) for v in self.values):
                raise ValueError("`values` must be finite numbers")
        elif self.values:
            raise ValueError(f"`values` is only used with op 'in' or 'not_in', not {self.op!r}")
        if self.op in get_args(CidrOp):
            if self.field != "info.src_ip":
                raise ValueError(f"op {self.op!r} tests an address: use field = 'info.src_ip'")
            if not self.cidrs:
                raise ValueError(f"op {self.op!r} needs a non-empty `cidrs` list")
            NetworkSet(self.cidrs)  # raises naming the bad ones
        elif self.cidrs:
            raise ValueError(
                f"`cidrs` is only used with op 'in_cidr' or 'not_in_cidr', not {self.op!r}"
            )


class NetworkSet:
    """Networks, merged into sorted integer ranges: membership is a bisection per address."""

    __slots__ = ("_ranges",)

    def __init__(self, cidrs: Iterable[str]) -> None:
        nets: dict[int, list[Any]] = {4: [], 6: []}
        bad: list[str] = []
        for text in cidrs:
            try:
                net = ipaddress.ip_network(text.strip(), strict=True)
            except ValueError:
                bad.append(text)
                continue
            nets[net.version].append(net)
        if bad:
            raise ValueError(f"not a network in CIDR notation (host bits must be 0): {bad[:5]!r}")
        self._ranges: dict[int, tuple[list[int], list[int]]] = {}
        for version, found in nets.items():
            merged = list(ipaddress.collapse_addresses(found))
            starts = [int(n.network_address) for n in merged]
            ends = [int(n.broadcast_address) for n in merged]
            self._ranges[version] = (starts, ends)

    def __contains__(self, text: object) -> bool:
        """Whether `text` is an address inside one of the networks; anything unparsable is
        outside every network."""
        if not isinstance(text, str):
            return False
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:10.1.2.3 is 10.1.2.3
        starts, ends = self._ranges[address.version]
        x = int(address)
        i = bisect.bisect_right(starts, x) - 1
        return i >= 0 and x <= ends[i]


def _more_extreme(op: str, a: Any, b: Any) -> Any:
    if op[0] == ">" and isinstance(a, float | int):
        return max(a, b)
    if op[0] == "<" and isinstance(a, float | int):
        return min(a, b)
    return b


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    h = (len(ordered) - 1) * q
    lo = int(h)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (h - lo) * (ordered[hi] - ordered[lo])


def _drop_sorted(ordered: list[float], value: float) -> None:
    i = bisect.bisect_left(ordered, value)
    if i < len(ordered) and ordered[i] == value:
        del ordered[i]


class _DeviceState:
    """A firing device: its run lengths and the most extreme value of the episode. It clears
    only after a full run of `clear_after` points back within the line."""

    __slots__ = ("breaching", "clearing", "peak")

    def __init__(self, breaching: int, peak: float | str) -> None:
        self.breaching = breaching
        self.clearing = 0
        self.peak = peak


PeerKey = tuple[str, str, str, str]  # tenant, zone, kind, the `peer_key` info value or ""


@register("threshold")
class ThresholdRule(Detector):
    params_model = ThresholdParams
    params: ThresholdParams

    def __init__(self, params: DetectorParams) -> None:
        if not isinstance(params, ThresholdParams):
            raise TypeError("ThresholdRule needs ThresholdParams")
        super().__init__(params)
        p = params
        self._info_key = p.field.removeprefix("info.") if p.field else None
        self._test: Callable[[Any, Any], bool]
        if p.op in _OPS:
            self._test = _OPS[p.op]
        elif p.op in ("in", "not_in"):
            members = frozenset(float(v) if p.metric else v for v in p.values)
            self._test = (
                (lambda v, _: v in members) if p.op == "in" else (lambda v, _: v not in members)
            )
        else:
            # Parsing an address costs ~3 µs; a device's address rarely changes. Bounded:
            # attackers choose the text.
            inside = functools.lru_cache(maxsize=4096)(NetworkSet(p.cidrs).__contains__)
            self._test = (
                (lambda v, _: inside(v)) if p.op == "in_cidr" else (lambda v, _: not inside(v))
            )
        self._fixed = p.value if p.value is not None else math.nan
        # A device past the line but not raised yet is only its run length, an int (small
        # ints are shared: no object per device), or (run, first report time) with `for_s`;
        # a firing one has a _DeviceState; a quiet one has nothing.
        self.state_: dict[DeviceRef, int | tuple[int, float] | _DeviceState] = {}
        if p.value_from == "peers":
            # One latest value per device, least recently reported first (expiry pops the
            # front), and each peer group's values kept sorted for the quantile.
            self.clock_ = StreamClock()
            self.peers_: OrderedDict[DeviceRef, tuple[float, float, str]] = OrderedDict()
            self.groups_: dict[PeerKey, list[float]] = {}

    def update(self, records: Sequence[Record]) -> list[Transition]:
        p = self.params
        crosses = self._test
        metric, info_key = p.metric, self._info_key
        peers = p.value_from == "peers"
        isnan = math.isnan
        limit = self._fixed
        found: tuple[float, int] | None = None
        changes: list[Transition] = []
        for record in records:
            seen: float | str | None
            if metric is not None:
                seen = record.metrics.get(metric)
                if seen is None or isnan(seen):  # missing or NaN: no data
                    continue
            else:
                seen = record.info.get(info_key) if info_key else None
                if seen is None:
                    continue
            if peers:
                found = self._peers_quantile(record, float(seen))
                if found is None:
                    continue
                limit = p.peer_factor * found[0]
            state = self.state_.get(record.device)
            if crosses(seen, limit):
                if isinstance(state, _DeviceState):
                    state.clearing = 0
                    state.breaching += 1
                    state.peak = _more_extreme(p.op, state.peak, seen)
                    continue
                run, since = _pending(state, record.ts)
                run += 1
                if run < p.raise_after or record.ts - since < p.for_s:
                    self.state_[record.device] = (run, since) if p.for_s else run
                    continue
                raised = self.state_[record.device] = _DeviceState(run, seen)
                held = record.ts - since
                changes.append(self._transition(record, seen, (limit, found), raised, True, held))
            elif isinstance(state, _DeviceState):
                state.breaching = 0
                state.clearing += 1
                if state.clearing >= p.clear_after:
                    changes.append(
                        self._transition(record, seen, (limit, found), state, False, 0.0)
                    )
                    del self.state_[record.device]
            elif state is not None:
                # A quiet device needs no state: dropping it keeps memory bounded.
                del self.state_[record.device]
        return changes

    def update_columns(self, columns: Columns) -> list[Transition]:
        """`update` on only the rows that can change something: a fixed line on a metric is
        tested on the whole column at once; the rows of a device that neither crosses it in
        this batch nor holds a pending or firing state change nothing (see `update`)."""
        p = self.params
        if p.metric is None or p.value_from == "peers" or p.op in get_args(CidrOp):
            return self.update(columns.records)
        values = columns.column(p.metric)
        seen = ~np.isnan(values)
        if p.op in _OPS:
            crossing = _OPS[p.op](values, self._fixed)
        else:
            crossing = np.isin(values, [float(v) for v in p.values]) == (p.op == "in")
        # Every row of a device that crosses in this batch or holds a state: a row that
        # does not cross still resets or clears its run.
        involved = np.zeros(len(columns.table), dtype=np.bool_)
        involved[columns.slots[crossing & seen]] = True
        if self.state_:
            slot_of = columns.table.slot_of
            involved[[slot_of[ref] for ref in self.state_ if ref in slot_of]] = True
        wanted = involved[columns.slots] & seen
        records = columns.records
        return self.update([records[i] for i in np.flatnonzero(wanted).tolist()])

    def _peers_quantile(self, record: Record, value: float) -> tuple[float, int] | None:
        """The `peer_quantile` of the device's peers' latest values (itself excluded) and
        their number, or None without `min_peers` of them; then the value joins the table."""
        p = self.params
        now = self.clock_.see(record.ts)
        self._expire(now - p.peer_window_s)
        ref = record.device
        tag = ""
        if p.peer_key is not None:
            tag = record.info.get(p.peer_key, "")
            if not tag:
                return None  # no model to group it by: no data
        self._drop_peer(ref)
        key = (ref.tenant, ref.zone, ref.kind, tag)
        group = self.groups_.setdefault(key, [])
        n = len(group)
        found = (_quantile(group, p.peer_quantile), n) if n >= p.min_peers else None
        bisect.insort(group, value)
        self.peers_[ref] = (now, value, tag)
        return found

    def _drop_peer(self, ref: DeviceRef) -> None:
        old = self.peers_.pop(ref, None)
        if old is None:
            return
        key = (ref.tenant, ref.zone, ref.kind, old[2])
        group = self.groups_.get(key)
        if group is not None:
            _drop_sorted(group, old[1])
            if not group:
                del self.groups_[key]

    def _expire(self, cutoff: float) -> None:
        """Drop the peers whose latest report is older than the window (the front)."""
        while self.peers_:
            ref, (stamp, _, _) = next(iter(self.peers_.items()))
            if stamp >= cutoff:
                return
            self._drop_peer(ref)

    def _transition(
        self,
        record: Record,
        value: float | str,
        line: tuple[float, tuple[float, int] | None],
        state: _DeviceState,
        firing: bool,
        held: float,
    ) -> Transition:
        p = self.params
        name = p.metric or p.field or ""
        limit, found = line
        rule = self._rule(limit)
        condition = f"{name} {rule}"
        shown = f"{value:g}" if isinstance(value, float | int) else repr(value)
        where = record.device.device_id
        if p.op in _OPS:
            verb = "crossed" if firing else "is back within"
            summary = f"{name} {verb} {rule} on {where} ({shown})"
        elif firing:
            summary = f"{condition} on {where} ({shown})"
        else:
            summary = f"{name} on {where} is back to normal ({shown})"
        evidence: dict[str, EvidenceValue] = {
            "field": name,
            "value": value,
            "peak": state.peak,
            "condition": condition,
            "op": p.op,
            "points": p.raise_after if firing else p.clear_after,
        }
        if p.metric is not None:
            evidence["metric"] = p.metric
        if p.op in _OPS:
            evidence["threshold"] = limit
        if p.values or p.cidrs:
            evidence["set_size"] = len(p.values or p.cidrs)
        if p.for_s and firing:
            evidence["for_s"] = p.for_s
            evidence["held_s"] = held
        if found is not None:
            quantile, n = found
            ref = record.device
            where = f"{ref.tenant}/{ref.zone} {ref.kind}"
            if p.peer_key is not None:
                where += f" {p.peer_key} {record.info.get(p.peer_key, '')}"
            q = f"p{p.peer_quantile * 100:g}"
            evidence["baseline"] = f"{q} of {n} peers of {where}: {quantile:,.6g}"
            evidence["peers"] = n
            evidence["peer_quantile"] = p.peer_quantile
            evidence["peer_value"] = quantile
        return Transition(record.device, firing, record.ts, summary, evidence)

    def _rule(self, limit: float) -> str:
        """The condition without the field's name: `> 100`, `not in {'5.7.3'}`."""
        p = self.params
        if p.op in _OPS:
            if p.value_from == "peers":
                factor = "" if p.peer_factor == 1 else f"{p.peer_factor:g} x "
                q = f"p{p.peer_quantile * 100:g}"
                return f"{p.op} {factor}{q} of peers ({limit:,.6g})"
            return f"{p.op} {limit:g}"
        members: Sequence[object] = p.values or p.cidrs
        verb = "in" if p.op in ("in", "in_cidr") else "not in"
        if len(members) <= _SHOWN_SET:
            shown = ", ".join(repr(m) if isinstance(m, str) else f"{m:g}" for m in members)
            return f"{verb} {{{shown}}}"
        what = "networks" if p.cidrs else "values"
        return f"{verb} a set of {len(members)} {what}"

    def tracked_devices(self) -> int:
        if self.params.value_from != "peers":
            return len(self.state_)
        return len(self.peers_) + sum(1 for ref in self.state_ if ref not in self.peers_)

    def forget(self, device_ids: set[str]) -> None:
        forget_devices(self.state_, device_ids)
        if self.params.value_from == "peers":
            for ref in [ref for ref in self.peers_ if ref.device_id in device_ids]:
                self._drop_peer(ref)

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)
        if self.params.value_from == "peers":
            # JSON keeps the order, not the type: expiry needs the OrderedDict back.
            self.peers_ = OrderedDict(self.peers_)


def _pending(state: object, ts: float) -> tuple[int, float]:
    """A pending run and the time it began (the record's own time when unknown: a state
    carried over from a config without `for_s`)."""
    if isinstance(state, tuple):
        return state[0], state[1]
    if isinstance(state, int):
        return state, ts
    return 0, ts
