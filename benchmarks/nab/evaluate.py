"""Score a detector's NAB result files (``RESULTS/<detector>/<category>/<detector>_<file>.csv``)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.nab.corpus import PROFILES, Corpus, CorpusError, FloatArray
from benchmarks.nab.scoring import Optimiser, ProfileResult, score_corpus


def load_detector_scores(
    corpus: Corpus, results_root: Path, detector: str
) -> tuple[dict[str, FloatArray], dict[str, list[tuple[int, int]]]]:
    scores: dict[str, FloatArray] = {}
    windows: dict[str, list[tuple[int, int]]] = {}
    for name in corpus.names:
        stamps, values = corpus.read_scores(results_root, detector, name)
        scores[name] = values
        windows[name] = corpus.window_indices(name, stamps)
    return scores, windows


def evaluate(
    corpus: Corpus,
    scores: dict[str, FloatArray],
    windows: dict[str, list[tuple[int, int]]],
    profiles: tuple[str, ...] = PROFILES,
    optimiser: Optimiser = "sweep",
) -> dict[str, ProfileResult]:
    out: dict[str, ProfileResult] = {}
    for profile in profiles:
        cost = corpus.profiles.get(profile)
        if cost is None:
            raise CorpusError(f"profile {profile!r} is not in config/profiles.json")
        out[profile] = score_corpus(scores, windows, cost, profile, corpus.window_count, optimiser)
    return out


def evaluate_results(
    corpus: Corpus,
    results_root: Path,
    detector: str,
    profiles: tuple[str, ...] = PROFILES,
    optimiser: Optimiser = "sweep",
) -> dict[str, ProfileResult]:
    """Score a detector's result files the way NAB does (threshold optimised per profile)."""
    scores, windows = load_detector_scores(corpus, results_root, detector)
    return evaluate(corpus, scores, windows, profiles, optimiser)
