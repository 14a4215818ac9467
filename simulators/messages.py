"""MQTT messages as the simulated devices publish them (see docs/wire-format.md)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from typing import NamedTuple, TypeVar, cast

import numpy as np
import numpy.typing as npt
import orjson

from detectors.columns import Block, Reports
from simulators.fleet import Device

DEFAULT_TOPIC_PREFIX = "fleet"
# One or more plain topic levels: no wildcard, no empty level.
_PREFIX_RE = re.compile(r"[^/+#\x00]+(/[^/+#\x00]+)*")


class Message(NamedTuple):
    """One publication. `ts` is the simulated time it is sent at (the payload has its own)."""

    ts: float
    topic: str
    payload: bytes
    device_id: str
    qos: int = 1
    retain: bool = False
    # Who publishes it when a real broker is used: "" the simulator's gateway connection;
    # WILL the broker itself (the device's last will, its connection having dropped);
    # "operator:<client_id>" a separate client with the operator's credentials.
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Run:
    """Plain telemetry reports (of devices no effect touches) sent one after another, handed
    over as columns (`generate(..., decoded=True)`): `reports` is what the agent's decoder
    makes of the payloads they would carry, which are never written
    (tests/test_generator_decoded.py checks it row by row); `sent` is when each is sent (as a
    Message's `ts`) and `topics` where. `senders` is every device id the run's producer
    may send as (one set shared by all its runs): the agent admits a run at once when it
    knows them all."""

    sent: npt.NDArray[np.float64]
    topics: Sequence[str]
    reports: Reports
    senders: frozenset[str]

    @property
    def ts(self) -> float:
        """When the run starts: its place in the stream."""
        return float(self.sent[0])

    def __len__(self) -> int:
        return len(self.sent)

    def split(self, at: int) -> tuple[Run, Run]:
        """The first `at` reports, and the rest."""
        n = len(self.sent)
        return self._rows(0, at), self._rows(at, n)

    def sent_before(self, ts: float) -> int:
        """How many of the reports are sent before `ts`."""
        return int(np.searchsorted(self.sent, ts, side="left"))

    def _rows(self, lo: int, hi: int) -> Run:
        return Run(self.sent[lo:hi], self.topics[lo:hi], self.reports.slice(lo, hi), self.senders)


_Item = TypeVar("_Item", bound="Message | Run")
_Extra = TypeVar("_Extra")


def interleave(
    items: Iterable[_Item], extras: Iterable[_Extra], ts_of: Callable[[_Extra], float]
) -> Iterator[_Item | _Extra]:
    """`items` (in time order) with `extras` (in time order) merged in: each extra goes
    before the first message or report sent at or after its time (a run is cut there)."""
    pending = iter(extras)
    extra = next(pending, None)
    for item in items:
        while extra is not None and ts_of(extra) <= item.ts:
            yield extra
            extra = next(pending, None)
        if isinstance(item, Run):
            rest: Run = item
            while extra is not None and ts_of(extra) <= float(rest.sent[-1]):
                head, rest = rest.split(rest.sent_before(ts_of(extra)))
                if len(head):
                    yield cast(_Item, head)
                yield extra
                extra = next(pending, None)
            item = cast(_Item, rest)  # noqa: PLW2901 - what is left of the run
        yield item
    while extra is not None:
        yield extra
        extra = next(pending, None)


WILL = "will"
OPERATOR = "operator:"

# A Message from its seven fields without a Python-level call (NamedTuple's __new__ is one).
_new_message = cast(Callable[[Iterable[object]], Message], partial(tuple.__new__, Message))
_DEFAULT_FIELDS = tuple(Message._field_defaults.values())  # qos, retain, origin


def plain_messages(
    ts: Iterable[float], topics: Iterable[str], payloads: Iterable[bytes], device_ids: Iterable[str]
) -> Iterator[Message]:
    """Messages with the default qos, retain and origin: `Message(ts, topic, payload, id)` each,
    made in C as they are iterated (one that is dropped at once never reaches an older garbage
    collector generation)."""
    defaults = (repeat(v) for v in _DEFAULT_FIELDS)  # endless: zip stops with the fields
    return map(_new_message, zip(ts, topics, payloads, device_ids, *defaults, strict=False))


def payload_head(device_id: str) -> bytes:
    """A telemetry payload up to its `ts` value: the same for every report of a device."""
    return b'{"device_id":' + orjson.dumps(device_id) + b',"ts":'


def payload_tail(info: Mapping[str, str]) -> bytes:
    """A telemetry payload from the end of its metrics: the same while `info` does not change."""
    return b'},"info":' + orjson.dumps(info) + b"}"


def telemetry_payloads(
    heads: list[bytes],
    ts: np.ndarray,
    seq: np.ndarray,
    metrics: Mapping[str, np.ndarray],
    tails: list[bytes],
) -> list[bytes]:
    """The payloads of a batch of reports, row by row, byte for byte what `orjson.dumps` makes of
    `{"device_id", "ts", "seq", "metrics": {name: value}, "info"}` (see `effects.encode`).

    `heads` and `tails` come from `payload_head` and `payload_tail`. orjson writes each column's
    numbers in one call, and one `%` per report splices them into a template of the keys: no dict
    and no orjson call per report.
    """
    parts = [heads, _texts(ts), _texts(seq)]
    template = [b'%b%b,"seq":%b,"metrics":{']
    for i, (name, column) in enumerate(metrics.items()):
        template.append(b"," if i else b"")
        template.append(orjson.dumps(name).replace(b"%", b"%%") + b":")
        if _same_bits(column):  # one text for the whole column: written into the template
            template.append(_texts(column[:1])[0])
        else:
            template.append(b"%b")
            parts.append(_texts(column))
    template.append(b"%b")
    parts.append(tails)
    fmt = b"".join(template)
    return [fmt % row for row in zip(*parts, strict=True)]


# The texts of small counts, made once (orjson's own): most counters of a report are small.
_SMALL = 4_096
_SMALL_INTS = np.array(orjson.dumps(list(range(_SMALL)))[1:-1].split(b","), dtype=object)


def metric_block(rows: np.ndarray, metrics: Mapping[str, np.ndarray]) -> Block:
    """The metrics of reports at `rows` as the agent's decoder reads them from
    `telemetry_payloads` with the same columns: every metric a float (JSON integers and
    booleans are read as floats), in column order."""
    values = np.column_stack([np.asarray(column, dtype=np.float64) for column in metrics.values()])
    return Block(rows, tuple(metrics), values.reshape(len(rows), len(metrics)))


def _texts(column: np.ndarray) -> list[bytes]:
    """orjson's JSON text of each number of a column."""
    if column.dtype.kind in "iu" and len(column) and column.min() >= 0 and column.max() < _SMALL:
        texts: list[bytes] = _SMALL_INTS[column].tolist()
        return texts
    if column.dtype.kind not in "biuf":
        raise TypeError(f"a metric column must hold numbers, not {column.dtype}")
    # Numbers hold no comma to split on.
    return orjson.dumps(column.tolist())[1:-1].split(b",") if len(column) else []


def _same_bits(column: np.ndarray) -> bool:
    """Whether every value is the same bits, hence the same text (0.0 and -0.0 are not)."""
    if not len(column) or column.dtype.kind not in "biuf":
        return False
    bits = column.view(f"u{column.dtype.itemsize}")
    return bool(np.all(bits == bits[0]))


def check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"invalid topic prefix {prefix!r}")
    return prefix


def topic(prefix: str, device: Device, leaf: str) -> str:
    return f"{prefix}/{device.tenant}/{device.zone}/{device.kind}/{device.device_id}/{leaf}"


def online(prefix: str, devices: Iterable[Device], ts: float) -> list[Message]:
    """The retained status each device publishes when it (re)connects."""
    payload = orjson.dumps({"state": "online", "ts": round(ts, 3)})
    return [Message(ts, topic(prefix, d, "status"), payload, d.device_id, 1, True) for d in devices]


def status(prefix: str, device: Device, state: str, ts: float) -> Message:
    """A retained status the device publishes itself (on connect: `online`)."""
    payload = orjson.dumps({"state": state, "ts": round(ts, 3)})
    return Message(ts, topic(prefix, device, "status"), payload, device.device_id, 1, True)


def last_will(prefix: str, device: Device, ts: float) -> Message:
    """The `offline` last will the broker publishes when the device's connection drops.

    Its payload is the bare string (a will is set at connect time: it carries no timestamp).
    """
    return Message(ts, topic(prefix, device, "status"), b"offline", device.device_id, 1, True, WILL)
