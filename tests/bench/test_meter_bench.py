"""bench/meter.py still runs against the meter as it is (a smoke run, not a measurement:
no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_meter_bench_runs_and_every_tick_writes() -> None:
    out = subprocess.run([sys.executable, "bench/meter.py", "--deployments", "3",
                          "--seconds", "2"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "tick failed" not in out.stderr + out.stdout
    header, row = out.stdout.strip().splitlines()[-2:]
    assert header.split()[0] == "deployments"
    cells = row.split()
    assert cells[0] == "3"
    # deployments, cpu % core, target, tick p50, tick max, usage rows, request rows, growth
    assert len(cells) == 8 and cells[2] in ("ok", "MISSED", "-")
    assert int(cells[5]) >= 3  # usage rows: each of the 3 stand-ins was read at least once
