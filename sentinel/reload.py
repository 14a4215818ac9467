"""Hot reload: a new configuration's detectors and alerting settings, without losing state.

Only `[[detectors]]`, `[alerting]` and `[[suppressions]]` change at runtime; a change anywhere
else (broker, database, ports, secrets' paths) needs a restart, and the reload is refused
saying which sections differ. A detector that keeps its name and type keeps its learned state:
the same object when its parameters did not change, else its state loaded into the new one
(when the layout no longer fits, it starts fresh and the result says so). A refused reload
changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from detectors.state import StateError
from sentinel.alerting.build import config_suppressions
from sentinel.alerting.suppressions import Suppression
from sentinel.config import Config, load_config
from sentinel.engine import DetectorInstance, build_instances
from sentinel.errors import ConfigError

RELOADABLE = frozenset({"detectors", "alerting", "suppressions"})


@dataclass
class ReloadPlan:
    config: Config
    instances: list[DetectorInstance]
    suppressions: list[Suppression]
    kept: list[str] = field(default_factory=list)  # same detector object, state untouched
    carried: list[str] = field(default_factory=list)  # new parameters, state carried over
    fresh: list[str] = field(default_factory=list)  # new, or state that no longer fits
    removed: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, list[str]]:
        return {
            "kept": self.kept,
            "carried": self.carried,
            "fresh": self.fresh,
            "removed": self.removed,
        }


def restart_sections(old: Config, new: Config) -> list[str]:
    """Top-level sections whose change a reload cannot apply."""
    before, after = old.model_dump(), new.model_dump()
    return sorted(
        k
        for k in before.keys() | after.keys()
        if k not in RELOADABLE and before.get(k) != after.get(k)
    )


def plan(old: Config, current: list[DetectorInstance], path: Path) -> ReloadPlan:
    """Read and check the new file; raises ConfigError (problems listed) to refuse."""
    new = load_config(path)
    frozen = restart_sections(old, new)
    if frozen:
        raise ConfigError(
            str(path), [f"[{name}] changed: restart the agent to apply it" for name in frozen]
        )
    suppressions = config_suppressions(new)
    built = build_instances(new.detectors)
    by_name = {inst.source.name: inst for inst in current}
    result = ReloadPlan(new, [], suppressions)
    for inst in built:
        old_inst = by_name.get(inst.source.name)
        if old_inst is None or old_inst.source.detector_type != inst.source.detector_type:
            result.fresh.append(inst.source.name)
        elif old_inst.detector.params == inst.detector.params:
            inst.detector = old_inst.detector
            result.kept.append(inst.source.name)
        else:
            try:
                inst.detector.load_state(old_inst.detector.state_dict())
                result.carried.append(inst.source.name)
            except (StateError, KeyError, TypeError, ValueError):
                result.fresh.append(inst.source.name)
        result.instances.append(inst)
    kept_names = {inst.source.name for inst in built}
    result.removed = sorted(set(by_name) - kept_names)
    return result
