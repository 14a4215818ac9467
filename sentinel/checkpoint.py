"""Periodic, atomic checkpoints of detector state, so a restarted agent resumes, not restarts.

The file is JSON (never pickle: whoever can write it must not be able to run code), written to
a temporary file, fsynced, then renamed over the old one: a crash leaves either the old
checkpoint or the new one, never half of one. A detector whose saved state does not fit its
current type or parameters starts fresh, with a warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import structlog

from detectors.state import StateError
from sentinel.atomicfile import write_atomically
from sentinel.engine import Engine

log = structlog.get_logger(__name__)

FORMAT = 1


def save(engine: Engine, path: Path) -> int:
    """Write every detector's state; returns the file's size in bytes."""
    doc = {
        "format": FORMAT,
        "detectors": {
            inst.source.name: {
                "type": inst.source.detector_type,
                "state": inst.detector.state_dict(),
            }
            for inst in engine.instances
        },
    }
    data = orjson.dumps(doc)
    write_atomically(path, data)
    return len(data)


def load(engine: Engine, path: Path) -> list[str]:
    """Restore what the file holds; returns the names of the detectors restored."""
    try:
        doc: Any = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("checkpoint_unreadable", path=str(path), error=str(exc))
        return []
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        log.warning("checkpoint_format_unknown", path=str(path))
        return []
    saved = doc.get("detectors", {})
    restored = []
    for inst in engine.instances:
        entry = saved.get(inst.source.name) if isinstance(saved, dict) else None
        if not isinstance(entry, dict) or entry.get("type") != inst.source.detector_type:
            continue
        if not isinstance(entry.get("state"), dict):
            log.warning("checkpoint_detector_skipped", detector=inst.source.name)
            continue
        try:
            inst.detector.load_state(entry["state"])
        except (StateError, KeyError, TypeError, ValueError) as exc:
            # A checkpoint from another version, or a damaged one: start this detector fresh.
            log.warning("checkpoint_detector_skipped", detector=inst.source.name, error=str(exc))
            continue
        restored.append(inst.source.name)
    return restored
