"""CPU time and memory of process trees, read from /proc (Linux), for the benchmarks."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def tree(pid: int) -> list[int]:
    pids, pending = [], [pid]
    while pending:
        current = pending.pop()
        pids.append(current)
        pending += children(current)
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
    return total


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except OSError:
        return 0


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot; difference two readings."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class PeakRss(threading.Thread):
    """Samples the RSS of a process tree until stopped; keeps the peak of the sum."""

    def __init__(self, pid: int, every: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_total = 0
        self.peak_parent = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            pids = tree(self.pid)
            self.peak_total = max(self.peak_total, sum(rss_bytes(pid) for pid in pids))
            self.peak_parent = max(self.peak_parent, rss_bytes(self.pid))
            time.sleep(self.every)

    def stop(self) -> None:
        self._done.set()
        self.join(5)
