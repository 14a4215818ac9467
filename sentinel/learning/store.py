"""Writing model versions: a skops file plus metadata JSON, in a folder renamed into place.

A version folder appears complete or not at all (written under a dot-name, then renamed), so an
agent checking `model_dir` never sees half a model. Reading is `detectors.learned.load_version`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from datetime import UTC, datetime
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from detectors.learned import (
    META_FILE,
    META_FORMAT,
    MODEL_FILE,
    TRUSTED_TYPES,
    ModelError,
    untrusted_types,
)


def version_name(when: datetime, model_dir: Path) -> str:
    base = "v" + when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    name, n = base, 0
    while (model_dir / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def library_versions() -> dict[str, str]:
    libs = {name: dist_version(name) for name in ("scikit-learn", "skops", "numpy", "scipy")}
    return {"python": platform.python_version(), **libs}


def save_version(
    model_dir: Path, estimator: Any, meta: dict[str, Any], trained_at: datetime
) -> Path:
    """Write a new version; `meta` gets version, format, file hash and types added."""
    import skops.io as sio  # type: ignore[import-untyped]  # noqa: PLC0415 - heavy import

    model_dir.mkdir(parents=True, exist_ok=True)
    name = version_name(trained_at, model_dir)
    tmp = model_dir / f".tmp-{name}-{os.getpid()}"
    tmp.mkdir()
    try:
        path = tmp / MODEL_FILE
        sio.dump(estimator, path)
        needed = untrusted_types(path)
        outside = sorted(set(needed) - TRUSTED_TYPES)
        if outside:  # the loader would refuse it: fail now, naming the types
            raise ModelError(f"the model needs types outside the allow-list: {outside}")
        full = {
            "format": META_FORMAT,
            "version": name,
            **meta,
            "trusted_types": needed,
            "model_file": MODEL_FILE,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "libraries": library_versions(),
        }
        (tmp / META_FILE).write_text(json.dumps(full, indent=2, allow_nan=False) + "\n", "utf-8")
        os.rename(tmp, model_dir / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return model_dir / name
