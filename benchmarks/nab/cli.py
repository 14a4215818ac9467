"""``sentinel bench nab``: Sentinel's scoring detectors on the Numenta Anomaly Benchmark.

Mount with ``cli.add_typer(benchmarks.nab.cli.app, name="bench")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from benchmarks.nab.corpus import PROFILES, Corpus, CorpusError
from benchmarks.nab.evaluate import evaluate, load_detector_scores
from benchmarks.nab.runner import nab_detectors, run_corpus
from benchmarks.nab.scoring import Optimiser, ProfileResult

app = typer.Typer(help="Benchmarks of Sentinel's detectors.", no_args_is_help=True)

DataOpt = Annotated[
    Path, typer.Option("--data", help="NAB folder (data/, labels/, config/).", show_default=True)
]


@app.callback()
def bench() -> None:
    """Benchmarks of Sentinel's detectors."""


def _corpus(data: Path) -> Corpus:
    try:
        return Corpus(data)
    except CorpusError as exc:
        typer.echo(f"bench nab: {exc}", err=True)
        raise typer.Exit(2) from None


def _table(detector: str, results: dict[Optimiser, dict[str, ProfileResult]]) -> list[str]:
    lines = [f"{detector}", f"  {'profile':<20} {'score':>7} {'threshold':>10}   NAB hill-climb"]
    sweep, climb = results["sweep"], results["hill-climb"]
    for profile in PROFILES:
        a, b = sweep[profile], climb[profile]
        climbed = f"{b.score:7.2f} ({b.threshold:.4f})"
        lines.append(f"  {profile:<20} {a.score:7.2f} {a.threshold:10.4f}   {climbed}")
    std = sweep["standard"]
    detected = sum(f.detected for f in std.files)
    windows = sum(f.windows for f in std.files)
    fps = sum(f.false_positives for f in std.files)
    lines.append(f"  standard: {detected}/{windows} windows detected, {fps} false-positive rows")
    return lines


def _score(corpus: Corpus, results_root: Path, detector: str) -> list[str]:
    scores, windows = load_detector_scores(corpus, results_root, detector)
    both: dict[Optimiser, dict[str, ProfileResult]] = {
        "sweep": evaluate(corpus, scores, windows, optimiser="sweep"),
        "hill-climb": evaluate(corpus, scores, windows, optimiser="hill-climb"),
    }
    return _table(detector, both)


@app.command("nab")
def nab(
    data: DataOpt = Path("../shared/nab"),
    out: Annotated[
        Path, typer.Option("--out", help="Results folder, written in NAB's layout.")
    ] = Path("nab-results"),
    detector: Annotated[
        list[str] | None,
        typer.Option("--detector", "-d", help="Detector to run (repeatable; default: all)."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Processes.")] = 2,
) -> None:
    """Run scoring detectors over all NAB files (one configuration) and print NAB scores.

    Scores use the threshold that maximises each profile's total (a full sweep); the column
    "NAB hill-climb" is NAB's own local search from 0.5, which its scoreboard used.
    """
    corpus = _corpus(data)
    names = detector or nab_detectors()
    unknown = sorted(set(names) - set(nab_detectors()))
    if unknown:
        typer.echo(f"bench nab: no NAB configuration for {unknown}", err=True)
        raise typer.Exit(2)
    for name in names:
        stats = run_corpus(corpus, out, name, workers=workers)
        typer.echo(
            f"{name}: {stats.files} files, {stats.rows} rows in {stats.seconds:.1f} s "
            f"-> {out / name}"
        )
        typer.echo("\n".join(_score(corpus, out, name)))


@app.command("nab-score")
def nab_score(
    results: Annotated[Path, typer.Option("--results", help="Folder of NAB result files.")],
    detector: Annotated[list[str], typer.Option("--detector", "-d", help="Detector name.")],
    data: DataOpt = Path("../shared/nab"),
) -> None:
    """Score existing NAB result files (e.g. NAB's published ``results/numenta``)."""
    corpus = _corpus(data)
    for name in detector:
        try:
            typer.echo("\n".join(_score(corpus, results, name)))
        except CorpusError as exc:
            typer.echo(f"bench nab-score: {exc}", err=True)
            raise typer.Exit(2) from None
