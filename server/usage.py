"""Live resource readings of an engine: from its slice (cgroup counters: everything in
the slice, children included) or, without one, from /proc of the engine process."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

# (cpu seconds so far, memory bytes now, peak memory bytes) or None when unreadable
Reader = Callable[[], "tuple[float, int, int] | None"]


def process_reader(pid: int) -> Reader:
    peak = 0

    def read() -> tuple[float, int, int] | None:
        nonlocal peak
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/statm") as f:
                rss = int(f.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            return None
        peak = max(peak, rss)
        return (int(fields[11]) + int(fields[12])) / _TICK, rss, peak  # utime + stime

    return read


@dataclass
class UsageMeter:
    """CPU % between two readings, memory now and at its peak."""

    read: Reader
    source: str
    cpu_percent: float = 0.0
    cpu_seconds: float = 0.0
    memory_bytes: int = 0
    memory_peak_bytes: int = 0
    gpu_memory_bytes: int | None = None  # set by the meter on GPU tiers (server.gpu)
    _last: tuple[float, float] | None = None

    def sample(self) -> bool:
        """Take a reading; False when it cannot be read (the engine is gone)."""
        reading = self.read()
        if reading is None:
            return False
        cpu, self.memory_bytes, self.memory_peak_bytes = reading
        now = time.monotonic()
        if self._last is not None and now > self._last[0]:
            self.cpu_percent = max(0.0, 100.0 * (cpu - self._last[1]) / (now - self._last[0]))
        self._last = (now, cpu)
        self.cpu_seconds = cpu
        return True
