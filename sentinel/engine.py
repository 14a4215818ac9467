"""The detection engine: configured detector instances, fed by kind, in micro-batches."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from detectors import registry
from detectors.base import Detector
from detectors.model import Record, Transition
from sentinel.alerting.alerts import AlertSource, alertname_for
from sentinel.config import DetectorConfig


@dataclass(slots=True)
class DetectorInstance:
    source: AlertSource
    kinds: frozenset[str]
    detector: Detector


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
        )
        detector = registry.create(cfg.type, cfg.parsed_params())
        instances.append(DetectorInstance(source, frozenset(cfg.kinds), detector))
    return instances


class Engine:
    def __init__(self, instances: list[DetectorInstance]) -> None:
        self.instances = instances

    def process(self, records: Sequence[Record]) -> list[tuple[AlertSource, list[Transition]]]:
        by_kind: dict[str, list[Record]] = defaultdict(list)
        for record in records:
            by_kind[record.device.kind].append(record)
        results = []
        for inst in self.instances:
            # Arrival order is kept per device, which is all a per-device detector needs.
            selected = [r for kind in inst.kinds for r in by_kind.get(kind, ())]
            if selected:
                transitions = inst.detector.update(selected)
                if transitions:
                    results.append((inst.source, transitions))
        return results

    def forget(self, device_ids: set[str]) -> None:
        for inst in self.instances:
            inst.detector.forget(device_ids)
