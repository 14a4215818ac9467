"""The detection engine: configured detector instances, fed by kind, in micro-batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter

import numpy as np

from detectors import registry
from detectors.base import Detector, ScoringDetector, Verdict
from detectors.columns import Columns, Reports, Rows
from detectors.model import CommandConsumer, CommandRecord, DeviceRef, Record, Transition
from detectors.slots import DeviceTable
from sentinel.alerting.alerts import AlertSource, alertname_for
from sentinel.config import DetectorConfig

_KIND = itemgetter(2)  # a DeviceRef's kind: a tuple index, not the NamedTuple's property
_BY_RECORDS = Detector.update_columns  # the default: `update` on the records


@dataclass(slots=True)
class DetectorInstance:
    source: AlertSource
    kinds: frozenset[str]
    detector: Detector
    # The device group it watches within its kinds: tenants and zones (empty: all).
    tenants: frozenset[str] = frozenset()
    zones: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()  # the devices' `info.model` (empty: any)

    def in_group(self, device: DeviceRef) -> bool:
        return (not self.tenants or device.tenant in self.tenants) and (
            not self.zones or device.zone in self.zones
        )


@dataclass(frozen=True, slots=True)
class ScoreSample:
    """A scoring detector's most anomalous verdict for one device in one batch (for Grafana)."""

    detector: str
    device: DeviceRef
    ts: float
    score: float
    value: float
    expected_low: float
    expected_high: float


def _worst_per_device(detector: str, verdicts: Sequence[Verdict]) -> list[ScoreSample]:
    worst: dict[DeviceRef, Verdict] = {}
    for v in verdicts:
        best = worst.get(v.device)
        if best is None or v.score > best.score:
            worst[v.device] = v
    return [
        ScoreSample(detector, v.device, v.ts, v.score, v.value, v.expected_low, v.expected_high)
        for v in worst.values()
    ]


def build_instances(configs: Sequence[DetectorConfig]) -> list[DetectorInstance]:
    instances = []
    for cfg in configs:
        if not cfg.enabled:
            continue
        source = AlertSource(
            name=cfg.name,
            alertname=alertname_for(cfg.name),
            detector_type=cfg.type,
            severity=cfg.severity,
            summary=cfg.summary,
            mode=cfg.mode,
            mitre=cfg.mitre,
            group=cfg.group,
        )
        detector = registry.create(cfg.type, cfg.parsed_params())
        instances.append(
            DetectorInstance(
                source,
                frozenset(cfg.kinds),
                detector,
                frozenset(cfg.tenants),
                frozenset(cfg.zones),
                frozenset(cfg.models),
            )
        )
    return instances


class Engine:
    def __init__(self, instances: list[DetectorInstance]) -> None:
        self.instances = instances
        self._scores: list[ScoreSample] = []
        # Each device's last reported `info.model`, kept only while an instance selects by
        # model (bounded by the admitted devices).
        self._model_of: dict[DeviceRef, str] = {}
        # Slots for the detectors that take batches as columns (detectors.columns); the
        # columns are built once per batch, and only if one of them is configured.
        self.table = DeviceTable()
        self._selections: dict[frozenset[str], Columns] = {}  # this batch's, by kinds
        self._by_columns = any(
            type(inst.detector).update_columns is not _BY_RECORDS for inst in instances
        )

    def reject_new_normal(self, detector: str, device: DeviceRef, since: float) -> list[str]:
        """An operator's verdict that `device`'s new level is not normal, passed to the
        detector instance named `detector` (see Detector.reject_new_normal)."""
        return [
            line
            for inst in self.instances
            if inst.source.name == detector
            for line in inst.detector.reject_new_normal(device, since)
        ]

    def _learn_models(self, refs: Sequence[DeviceRef], infos: Sequence[Mapping[str, str]]) -> None:
        model_of = self._model_of
        for ref, info in zip(refs, infos, strict=True):
            model = info.get("model")
            if model is not None and model_of.get(ref) != model:
                model_of[ref] = model

    def take_scores(self) -> list[ScoreSample]:
        """Score samples of the scoring detectors in the last `process` call. Callers that do
        not want them (eval, backtest) need not take them: each call starts a new list."""
        scores, self._scores = self._scores, []
        return scores

    def _run(self, inst: DetectorInstance, records: Sequence[Record]) -> list[Transition]:
        detector = inst.detector
        if not isinstance(detector, ScoringDetector):
            return detector.update(records)
        verdicts = detector.decide(records)
        self._scores += _worst_per_device(inst.source.name, verdicts)
        return [v.transition() for v in verdicts if v.change is not None]

    def process(
        self, records: Sequence[Record], commands: Sequence[CommandRecord] = ()
    ) -> list[tuple[AlertSource, list[Transition]]]:
        if self._by_columns and records:
            return self.process_reports(Reports.of_records(records), commands)
        return self._process([r.device for r in records], records, None, commands)

    def columns_of(self, reports: Reports) -> Columns:
        """Reports as columns on this engine's device table, for `process_columns`."""
        return Columns.of_reports(reports, self.table)

    def process_reports(
        self, reports: Reports, commands: Sequence[CommandRecord] = ()
    ) -> list[tuple[AlertSource, list[Transition]]]:
        """`process` for reports that came as columns (eval's simulated ones): records are
        made only for the detectors that need them."""
        if not self._by_columns or not len(reports):
            return self._process(reports.refs, list(Rows(reports)), None, commands)
        return self.process_columns(self.columns_of(reports), commands)

    def process_columns(
        self, columns: Columns, commands: Sequence[CommandRecord] = ()
    ) -> list[tuple[AlertSource, list[Transition]]]:
        """`process_reports` for reports already given slots (`columns_of`)."""
        if columns.table is not self.table:
            raise ValueError("columns of another engine's device table")
        return self._process(columns.reports.refs, columns.records, columns, commands)

    def _process(
        self,
        refs: Sequence[DeviceRef],
        records: Sequence[Record],
        columns: Columns | None,
        commands: Sequence[CommandRecord],
    ) -> list[tuple[AlertSource, list[Transition]]]:
        self._scores = []  # never more than one batch's worth held
        if columns is None:
            kinds = np.array(list(map(_KIND, refs)), dtype=object)
            rows_of_kind = {k: np.flatnonzero(kinds == k).tolist() for k in set(kinds.tolist())}
        else:
            rows_of_kind = columns.rows_of_kind()
        if any(inst.models for inst in self.instances):
            self._learn_models(refs, columns.infos if columns else [r.info for r in records])
        elif self._model_of:
            self._model_of = {}
        results = []
        # Records for the detectors that take no columns: made at most once per batch.
        every: list[Record] | None = None if columns is not None else list(records)
        for inst in self.instances:
            rows = self._rows(inst, refs, rows_of_kind)
            transitions: list[Transition] = []
            watched = len(refs) if rows is None else len(rows)
            if not watched:
                pass
            elif columns is not None and type(inst.detector).update_columns is not _BY_RECORDS:
                transitions = inst.detector.update_columns(self._select(inst, columns, rows))
            else:
                every = list(records) if every is None else every
                transitions = self._run(inst, every if rows is None else [every[i] for i in rows])
            if commands and isinstance(inst.detector, CommandConsumer):
                mine = [
                    c for c in commands if c.device.kind in inst.kinds and inst.in_group(c.device)
                ]
                transitions += inst.detector.update_commands(mine) if mine else []
            if transitions:
                results.append((inst.source, transitions))
        self._selections.clear()  # nothing of a batch is kept past it
        return results

    def _select(self, inst: DetectorInstance, columns: Columns, rows: list[int] | None) -> Columns:
        """The instance's rows as columns; instances that watch the same kinds (and no
        narrower group) share one selection per batch."""
        if rows is None:
            return columns
        if inst.tenants or inst.zones or inst.models:
            return columns.select(np.array(rows, np.int64))
        selected = self._selections.get(inst.kinds)
        if selected is None:
            selected = self._selections[inst.kinds] = columns.select(np.array(rows, np.int64))
        return selected

    def _rows(
        self,
        inst: DetectorInstance,
        refs: Sequence[DeviceRef],
        rows_of_kind: dict[str, list[int]],
    ) -> list[int] | None:
        """The rows an instance watches, in arrival order (None: every row)."""
        rows: list[int] | None
        # Arrival order is kept across kinds too: detectors that read the stream's time
        # (the latest ts seen) would otherwise see a later kind's records as late.
        if len(inst.kinds) == 1:
            rows = rows_of_kind.get(next(iter(inst.kinds)), [])
        elif inst.kinds >= rows_of_kind.keys():
            rows = None
        else:
            rows = sorted(i for k in inst.kinds for i in rows_of_kind.get(k, ()))
        if inst.tenants or inst.zones:
            every = range(len(refs)) if rows is None else rows
            rows = [i for i in every if inst.in_group(refs[i])]
        if inst.models:
            model_of = self._model_of
            every = range(len(refs)) if rows is None else rows
            rows = [i for i in every if model_of.get(refs[i]) in inst.models]
        return rows

    def forget(self, device_ids: set[str]) -> None:
        for inst in self.instances:
            inst.detector.forget(device_ids)
        self.table.release(device_ids)
        for ref in [ref for ref in self._model_of if ref.device_id in device_ids]:
            del self._model_of[ref]
