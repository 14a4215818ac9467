"""NAB's scoring, written from its published description (Lavin & Ahmad, 2015, and NAB's wiki).

- Each labelled anomaly has a window around it. Rows in the first 15% of a file (at most 750
  rows) are the probationary period: they are never scored.
- A detection is a row whose anomaly score reaches the threshold. Inside a window, only the
  earliest detection counts, weighted by a scaled sigmoid of its position: ``+tp`` at the
  window's left edge, falling towards 0 at its right edge. A window with no detection costs
  ``-fn``. A detection outside every window costs ``fp`` times the sigmoid of its distance past
  the previous window (less right after a window, ``-fp`` far from one or before the first).
- One threshold for the whole corpus, the one that maximises the profile's total score.
- Reported score: ``100 * (raw - null) / (perfect - null)``, where the null detector detects
  nothing (``-fn`` per window) and the perfect one detects every window at its left edge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from benchmarks.nab.corpus import CostMatrix, FloatArray

PROBATION_PERCENT = 0.15
PROBATION_CAP_ROWS = 5000  # NAB caps the probationary period at 15% of 5,000 rows


def scaled_sigmoid(position: FloatArray) -> FloatArray:
    """``2 * sigmoid(-5 x) - 1``, and ``-1`` for ``x > 3`` (far past a window)."""
    out = 2.0 / (1.0 + np.exp(5.0 * position)) - 1.0
    return np.where(position > 3.0, -1.0, out)


MAX_TP = float(scaled_sigmoid(np.array([-1.0]))[0])


def probation_rows(n_rows: int) -> int:
    """Rows at the start of a file that are never scored (NAB: min(floor(15%), 750))."""
    return int(min(math.floor(PROBATION_PERCENT * n_rows), PROBATION_PERCENT * PROBATION_CAP_ROWS))


@dataclass(frozen=True, slots=True)
class SweptFile:
    """Per-row weighted scores of one file for one profile, as if every row were a detection.

    ``window`` is the index of the row's window in the corpus (-1 outside windows); probationary
    rows are already removed.
    """

    name: str
    scores: FloatArray  # the detector's anomaly scores
    sweep: FloatArray  # the NAB value this row adds if it is a detection
    window: np.ndarray  # int, -1 outside any window
    n_windows: int  # windows with at least one scored row


def sweep_file(
    name: str,
    scores: FloatArray,
    windows: Sequence[tuple[int, int]],
    cost: CostMatrix,
    window_base: int = 0,
) -> SweptFile:
    """Weight every row of one file as NAB would if it were detected (``windows``: row spans)."""
    n = len(scores)
    idx = np.arange(n, dtype=np.float64)
    sweep = np.empty(n, dtype=np.float64)
    window = np.full(n, -1, dtype=np.int64)
    # Outside windows, before the first one: as far as can be from any window.
    sweep[:] = -1.0 * cost.fp
    for k, (left, right) in enumerate(windows):
        if not 0 <= left <= right < n:
            raise ValueError(f"{name}: window {left}..{right} does not fit {n} rows")
        width = right - left + 1
        inside = slice(left, right + 1)
        position = -(right - idx[inside] + 1.0) / width
        sweep[inside] = scaled_sigmoid(position) * cost.tp / MAX_TP
        window[inside] = window_base + k
        # After the window, up to the next one: penalty grows with distance past its right edge.
        stop = windows[k + 1][0] if k + 1 < len(windows) else n
        after = slice(right + 1, stop)
        past = np.abs(idx[after] - right) / max(width - 1, 1)
        sweep[after] = scaled_sigmoid(past) * cost.fp
    keep = slice(probation_rows(n), n)
    kept_window = window[keep]
    counted = len(set(kept_window[kept_window >= 0].tolist()))
    return SweptFile(name, scores[keep].astype(np.float64), sweep[keep], kept_window, counted)


@dataclass(frozen=True, slots=True)
class ThresholdScore:
    threshold: float
    score: float


def sweep_thresholds(files: Iterable[SweptFile], cost: CostMatrix) -> list[ThresholdScore]:
    """The raw NAB score at every distinct threshold (rows with score >= threshold detect).

    The first entry is "nothing detected" at a threshold above every score.
    """
    files = list(files)
    if not files:
        return []
    scores = np.concatenate([f.scores for f in files])
    sweep = np.concatenate([f.sweep for f in files])
    window = np.concatenate([f.window for f in files])
    n_windows = sum(f.n_windows for f in files)
    order = np.argsort(-scores, kind="stable")
    s_sorted, sw_sorted, w_sorted = scores[order], sweep[order], window[order]
    # Each row's change to the total when it becomes a detection: a false positive adds its own
    # (negative) value; a row in a window raises that window from its current best.
    delta = np.where(w_sorted < 0, sw_sorted, 0.0)
    best: dict[int, float] = {}
    for pos in np.flatnonzero(w_sorted >= 0).tolist():
        w = int(w_sorted[pos])
        value = float(sw_sorted[pos])
        old = best.get(w, -cost.fn)
        if value > old:
            best[w] = value
            delta[pos] = value - old
    totals = -cost.fn * n_windows + np.cumsum(delta)
    # A threshold includes every row that ties with it: evaluate after the last row of a run.
    last_of_run = np.flatnonzero(np.append(s_sorted[1:] != s_sorted[:-1], True))
    out = [ThresholdScore(math.inf, -cost.fn * n_windows)]
    out.extend(ThresholdScore(float(s_sorted[i]), float(totals[i])) for i in last_of_run.tolist())
    return out


def best_threshold(table: Sequence[ThresholdScore]) -> ThresholdScore:
    """The threshold with the highest corpus score, from a full sweep."""
    # Ties: the highest threshold (first in the table) wins, as in a stable sort by score.
    return max(table, key=lambda t: t.score)


def score_at(table: Sequence[ThresholdScore], threshold: float) -> float:
    """The raw score at any threshold, read from a sweep table (thresholds descending)."""
    keys = np.array([-t.threshold for t in table])
    k = int(np.searchsorted(keys, -threshold, side="right")) - 1
    return table[max(k, 0)].score


def hill_climb_threshold(
    table: Sequence[ThresholdScore], start: float = 0.5, step: float = 0.1, tol: float = 1e-7
) -> ThresholdScore:
    """The local search NAB's published results used instead of a full sweep.

    From ``start``, try one step up then one step down; a better score doubles the step and
    moves there, no better score halves it; stop when the step falls under ``tol``. Confined to
    [0, 1]. It can stop on a local optimum (numenta's low-FP threshold is one), so its score is
    at most the sweep's.
    """
    seen: dict[float, float] = {}

    def value(x: float) -> float:
        if x not in seen:
            seen[x] = score_at(table, x)
        return seen[x]

    x, best = start, value(start)
    while step > tol:
        step = min(step, (1.0 - x) / 2) if x + step > 1.0 else step
        x += step
        if value(x) > best:
            best, step = value(x), step * 2
            continue
        step = min(step, x / 2) if x - step < 0.0 else step
        x -= 2 * step
        if value(x) > best:
            best, step = value(x), step * 2
            continue
        x += step
        step /= 2
    return ThresholdScore(x, best)


@dataclass(frozen=True, slots=True)
class FileScore:
    name: str
    score: float
    windows: int
    detected: int
    false_positives: int


def score_file(f: SweptFile, threshold: float, cost: CostMatrix) -> FileScore:
    hit = f.scores >= threshold
    fp_rows = hit & (f.window < 0)
    total = float(f.sweep[fp_rows].sum())
    detected = 0
    for w in np.unique(f.window[f.window >= 0]).tolist():
        rows = hit & (f.window == w)
        if rows.any():
            detected += 1
            total += float(f.sweep[rows].max())
        else:
            total -= cost.fn
    return FileScore(f.name, total, f.n_windows, detected, int(fp_rows.sum()))


def normalise(raw: float, null: float, perfect: float) -> float:
    """NAB's reported score: 0 for the null detector, 100 for the perfect one."""
    return 100.0 * (raw - null) / (perfect - null)


@dataclass(frozen=True, slots=True)
class ProfileResult:
    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    files: tuple[FileScore, ...]

    @property
    def score(self) -> float:
        return normalise(self.raw, self.null, self.perfect)


Optimiser = Literal["sweep", "hill-climb"]


def score_corpus(
    scores: Mapping[str, FloatArray],
    windows: Mapping[str, Sequence[tuple[int, int]]],
    cost: CostMatrix,
    profile: str,
    total_windows: int | None = None,
    optimiser: Optimiser = "sweep",
) -> ProfileResult:
    """Optimise the threshold over the corpus, then score each file with it.

    ``optimiser``: ``sweep`` tries every distinct score (the true optimum); ``hill-climb`` is
    the local search from 0.5 that NAB's published scoreboard used. ``total_windows`` is the
    number of labelled windows (NAB's perfect score counts them all); by default, those given.
    """
    swept: list[SweptFile] = []
    base = 0
    for name in sorted(scores):
        spans = windows[name]
        swept.append(sweep_file(name, scores[name], spans, cost, window_base=base))
        base += len(spans)
    table = sweep_thresholds(swept, cost)
    best = hill_climb_threshold(table) if optimiser == "hill-climb" else best_threshold(table)
    files = tuple(score_file(f, best.threshold, cost) for f in swept)
    n_all = base if total_windows is None else total_windows
    null = -cost.fn * sum(f.n_windows for f in swept)
    return ProfileResult(
        profile=profile,
        threshold=best.threshold,
        raw=sum(f.score for f in files),
        null=null,
        perfect=cost.tp * n_all,
        files=tuple(files),
    )
