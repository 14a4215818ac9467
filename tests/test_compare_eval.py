"""benchmarks/compare_eval.py: two trees' eval alerts, compared."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.compare_eval import main

REPO = Path(__file__).resolve().parents[1]
RUN = ["--scenario", "camera-upload-surge", "--devices", "30", "--days", "0.6"]


def copy_tree(tmp_path: Path) -> Path:
    """The code and configs of this tree, as a baseline would hold them."""
    tree = tmp_path / "baseline"
    for part in ("sentinel", "detectors", "simulators", "deploy"):
        shutil.copytree(REPO / part, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def test_a_copy_of_this_tree_gives_identical_alerts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--baseline", str(copy_tree(tmp_path)), *RUN]) == 0
    out = capsys.readouterr().out
    assert "identical: 1 runs" in out
    assert "0 alerts" not in out  # the surge is seen: there are alerts to compare


def test_a_baseline_without_the_surge_rule_is_told_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = copy_tree(tmp_path)
    config = tree / "deploy" / "eval.toml"
    text = config.read_text()
    muted = text.replace(
        'metric = "upload_kbps"\nop = ">"\nvalue = 15000',
        'metric = "upload_kbps"\nop = ">"\nvalue = 1e9',
        1,
    )
    assert muted != text
    config.write_text(muted)
    assert main(["--baseline", str(tree), *RUN]) == 1
    out = capsys.readouterr().out
    assert "DIFFERENT" in out
    assert "only in this tree" in out
    assert "'camera-upload-surge'" in out
