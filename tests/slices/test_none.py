"""The `none` driver enforces nothing, so it tells the engine what it may use."""

from __future__ import annotations

import os
import subprocess
import sys

from server.slices import NoneDriver
from server.slices.base import SliceSpec


def test_an_engine_without_a_cgroup_is_told_its_tier_and_reads_it() -> None:
    spec = SliceSpec(name="chat", cpus=1, memory_bytes=3 * 2**30, pids_max=512, cores=(0,))
    slice_ = NoneDriver().create(spec)
    assert (slice_.env["OMP_NUM_THREADS"], slice_.env["BERTH_CPUS"]) == ("1", "0")
    # what the engine's own reader makes of that environment, in a fresh process
    out = subprocess.run(
        [sys.executable, "-c", "from engines.memory import memory_limit_bytes as m; "
                               "print(m())"],
        env={**os.environ, **slice_.env}, capture_output=True, text=True, check=True)
    assert int(out.stdout) <= 3 * 2**30  # the tier's, or a smaller cgroup's above it
    assert slice_.info.memory_limit_bytes == 3 * 2**30 and not slice_.info.enforced
