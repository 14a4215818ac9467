from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.store import spool as spool_module
from sentinel.store.spool import Spool, SpoolFull


def lines(start: int, n: int) -> list[str]:
    return [f"m,tenant=t v={i}.0 {i}" for i in range(start, start + n)]


def drain(s: Spool, step: int = 7) -> list[str]:
    out: list[str] = []
    while s:
        head = s.head(step)
        out += head
        s.consume(len(head))
    return out


def test_lines_come_back_in_order_across_segments_and_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 200)  # many small segments
    s = Spool(tmp_path, max_bytes=1 << 20)
    for start in range(0, 100, 10):
        s.append(lines(start, 10))
    assert len(list(tmp_path.glob("segment-*.lp"))) > 3
    first = s.head(5)
    s.consume(5)
    reopened = Spool(tmp_path, max_bytes=1 << 20)  # as after a crash: nothing acked is lost
    replayed = drain(reopened)
    assert first == lines(0, 5)
    # The partly consumed segment is written again after a crash: InfluxDB absorbs repeats.
    assert replayed[-95:] == lines(5, 95)
    assert set(replayed) <= set(lines(0, 100))
    assert reopened.bytes == 0
    assert list(tmp_path.glob("segment-*.lp")) == []


def test_appends_while_draining_go_to_a_new_segment(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1 << 20)
    s.append(lines(0, 3))
    assert s.head(2) == lines(0, 2)
    s.append(lines(3, 3))  # the segment being read is closed: this one is new
    assert drain(s, step=2) == lines(0, 6)


def test_full_spool_refuses_and_keeps_what_it_has(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=300)
    s.append(lines(0, 5))
    with pytest.raises(SpoolFull):
        s.append(lines(5, 50))
    assert drain(s) == lines(0, 5)
    s.append(lines(5, 5))
    assert drain(s) == lines(5, 5)
