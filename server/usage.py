"""Live resource readings of an engine process from /proc (the slice drivers of the
hardware-tiers work read the same numbers from cgroups)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class UsageMeter:
    """CPU % between two readings, and resident memory, of one process."""

    pid: int
    cpu_percent: float = 0.0
    memory_bytes: int = 0
    _last: tuple[float, float] | None = None

    def sample(self) -> bool:
        """Take a reading; False when the process is gone."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{self.pid}/statm") as f:
                rss_pages = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            return False
        cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
        now = time.monotonic()
        if self._last is not None and now > self._last[0]:
            self.cpu_percent = max(0.0, 100.0 * (cpu - self._last[1]) / (now - self._last[0]))
        self._last = (now, cpu)
        self.memory_bytes = rss_pages * _PAGE
        return True
