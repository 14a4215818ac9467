from __future__ import annotations

import io
import sys

import orjson
import pytest
import structlog

from sentinel import logs


def test_logging_survives_a_replaced_and_closed_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    borrowed = io.StringIO()
    real, sys.stderr = sys.stderr, borrowed
    try:
        logs.configure("info")  # as a CLI test does, under a runner's temporary stream
    finally:
        sys.stderr = real
    borrowed.close()
    structlog.get_logger("t").warning("after", n=1)  # must not raise ValueError
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert orjson.loads(line)["event"] == "after"
