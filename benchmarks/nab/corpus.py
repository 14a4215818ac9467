"""Reading NAB's layout: data files, label windows, profiles and per-detector result files."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

PROFILES: tuple[str, ...] = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


class CorpusError(ValueError):
    """The NAB folder is missing something or holds a file that does not fit its layout."""


@dataclass(frozen=True, slots=True)
class CostMatrix:
    """One application profile's weights (NAB's ``config/profiles.json``)."""

    tp: float
    fp: float
    fn: float


@dataclass(frozen=True, slots=True)
class Series:
    """One data file: its path relative to ``data/`` (e.g. ``realKnownCause/nyc_taxi.csv``)."""

    name: str
    timestamps: list[str]
    epoch: FloatArray  # seconds since 1970, naive timestamps read as UTC
    values: FloatArray

    @property
    def category(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def stem(self) -> str:
        return self.name.rsplit("/", 1)[-1]


def parse_time(text: str) -> datetime:
    """NAB writes ``2014-04-10 07:15:00`` in data and ``…00.000000`` in windows."""
    return datetime.fromisoformat(text.strip())


def _epoch(stamps: list[str]) -> FloatArray:
    # Naive datetimes: take them as UTC so that hour-of-week is the file's own clock.
    arr = np.array([s.strip().replace(" ", "T") for s in stamps], dtype="datetime64[s]")
    return arr.astype(np.int64).astype(np.float64)


def read_table(path: Path, columns: tuple[str, ...]) -> tuple[list[str], dict[str, FloatArray]]:
    """Read ``timestamp`` and the named numeric columns of one NAB CSV."""
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise CorpusError(f"{path}: empty file")
        try:
            ts_col = header.index("timestamp")
            cols = [header.index(c) for c in columns]
        except ValueError:
            raise CorpusError(f"{path}: needs columns timestamp, {', '.join(columns)}") from None
        stamps: list[str] = []
        rows: list[list[float]] = []
        for line in reader:
            if not line:
                continue
            stamps.append(line[ts_col])
            rows.append([float(line[c]) for c in cols])
    data = np.array(rows, dtype=np.float64).reshape(len(rows), len(columns))
    return stamps, {c: data[:, k] for k, c in enumerate(columns)}


class Corpus:
    """A NAB folder: ``data/``, ``labels/combined_windows.json``, ``config/profiles.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("data", "labels/combined_windows.json", "config/profiles.json"):
            if not (root / sub).exists():
                raise CorpusError(f"{root} is not a NAB folder: {sub} is missing")
        raw = json.loads((root / "labels" / "combined_windows.json").read_text())
        self.windows: dict[str, list[tuple[str, str]]] = {
            name: [(str(a), str(b)) for a, b in spans] for name, spans in sorted(raw.items())
        }
        self._profiles: dict[str, CostMatrix] = {}
        prof = json.loads((root / "config" / "profiles.json").read_text())
        for name, body in prof.items():
            m = body["CostMatrix"]
            self._profiles[name] = CostMatrix(
                tp=float(m["tpWeight"]), fp=float(m["fpWeight"]), fn=float(m["fnWeight"])
            )

    @property
    def names(self) -> list[str]:
        """Data files, relative to ``data/``, in a fixed order."""
        return list(self.windows)

    @property
    def profiles(self) -> Mapping[str, CostMatrix]:
        return dict(self._profiles)

    @property
    def window_count(self) -> int:
        return sum(len(w) for w in self.windows.values())

    def series(self, name: str) -> Series:
        stamps, cols = read_table(self.root / "data" / name, ("value",))
        return Series(name, stamps, _epoch(stamps), cols["value"])

    def iter_series(self) -> Iterator[Series]:
        for name in self.names:
            yield self.series(name)

    def result_path(self, results_root: Path, detector: str, name: str) -> Path:
        category, stem = name.split("/", 1)
        return results_root / detector / category / f"{detector}_{stem}"

    def read_scores(
        self, results_root: Path, detector: str, name: str
    ) -> tuple[list[str], FloatArray]:
        """One detector's ``anomaly_score`` column for one data file."""
        path = self.result_path(results_root, detector, name)
        if not path.exists():
            raise CorpusError(f"no results for {name} at {path}")
        stamps, cols = read_table(path, ("anomaly_score",))
        return stamps, cols["anomaly_score"]

    def window_indices(self, name: str, stamps: list[str]) -> list[tuple[int, int]]:
        """Each label window as inclusive row indices into this file's rows."""
        index = {parse_time(s): i for i, s in enumerate(stamps)}
        spans = []
        for start, end in self.windows[name]:
            try:
                spans.append((index[parse_time(start)], index[parse_time(end)]))
            except KeyError as exc:
                raise CorpusError(f"{name}: window edge {exc.args[0]} is not a row") from None
        return spans
