"""CPU time and RSS of processes from /proc, and when a busy receiver has gone quiet.

CPU is utime + stime of /proc/PID/stat (threads included), in clock ticks of SC_CLK_TCK
(10 ms here): a receiver is done with a stream once its CPU stops moving.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Fields after the command name in /proc/PID/stat: state is the first, utime the 12th.
_UTIME, _STIME = 11, 12


def parse_stat_ticks(stat: str) -> int:
    """utime + stime in clock ticks from the text of /proc/PID/stat.

    The command name (field 2) is in parentheses and may itself hold spaces or ')', so the
    fields are counted from the LAST ')'.
    """
    rest = stat[stat.rindex(")") + 1 :].split()
    return int(rest[_UTIME]) + int(rest[_STIME])


def parse_status_rss(status: str) -> int:
    """VmRSS in bytes from the text of /proc/PID/status."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit {unit!r}")
            return int(value) * 1024
    raise ValueError("no VmRSS line (a kernel thread, or a zombie)")


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of these processes, seconds."""
    ticks = sum(parse_stat_ticks(Path(f"/proc/{pid}/stat").read_text()) for pid in pids)
    return ticks / CLK_TCK


def rss_bytes(pid: int) -> int:
    return parse_status_rss(Path(f"/proc/{pid}/status").read_text())


@dataclass
class CpuTrace:
    """(monotonic time, CPU seconds) samples of the receiver, oldest first."""

    samples: list[tuple[float, float]] = field(default_factory=list)

    def add(self, t: float, cpu: float) -> None:
        self.samples.append((t, cpu))

    def quiet_for(self, now: float, window_s: float, max_cpu_s: float) -> bool:
        """True when the receiver used at most `max_cpu_s` CPU over the last `window_s`
        (and the trace spans that long): it has nothing left to process."""
        if not self.samples or now - self.samples[0][0] < window_s:
            return False
        last_cpu = self.samples[-1][1]
        before = [cpu for t, cpu in self.samples if t <= now - window_s]
        return bool(before) and last_cpu - before[-1] <= max_cpu_s

    def last_busy(self, min_delta_s: float) -> float | None:
        """Time of the last sample at which CPU grew by at least `min_delta_s` since the
        sample before it: when the receiver finished its last real work."""
        for (_t0, c0), (t1, c1) in zip(
            reversed(self.samples[:-1]), reversed(self.samples[1:]), strict=True
        ):
            if c1 - c0 >= min_delta_s:
                return t1
        return None


def sample(trace: CpuTrace, pids: Sequence[int]) -> float:
    cpu = cpu_seconds(pids)
    trace.add(time.monotonic(), cpu)
    return cpu
