"""The README's first command: the demo on the real stack ends with alerts and an incident."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.stack_env import require_stack

pytestmark = pytest.mark.stack


def test_demo_raises_the_injected_anomalies_on_the_real_stack() -> None:
    require_stack()
    proc = subprocess.run(
        [sys.executable, "-m", "sentinel.cli", "demo", "--duration", "30"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "real stack" in out
    injected = [line for line in out.splitlines() if line.startswith("Injected:")]
    raised = [line for line in out.splitlines() if line.startswith("Raised:")]
    assert injected, out[-3000:]
    assert len(raised) >= len(injected), out[-3000:]
    assert any(line.startswith("Incident:") for line in out.splitlines()), out[-3000:]
