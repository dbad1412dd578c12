"""GPU memory held by an engine, read through NVML.

NVML comes from the `nvidia-ml-py` package (`import pynvml`), installed on GPU hosts with
the `gpu` extra; it is never imported where no deployment holds a GPU. Memory is summed
over the processes of the engine's process tree on the GPUs its slice was given, so a
vLLM engine's worker processes count too. Where NVML is missing or fails, readings are
None (shown as "unknown"), never zero: zero would claim a GPU engine holds nothing.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Collection, Sequence
from typing import Any

log = logging.getLogger(__name__)


def process_tree(pid: int) -> set[int]:
    """`pid` and every live descendant (from /proc/<pid>/task/<tid>/children)."""
    tree, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p in tree:
            continue
        tree.add(p)
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except (OSError, ValueError):
                pass
    return tree


class GpuMemory:
    """Reads per-process GPU memory; `nvml` is the pynvml module (imported on first use
    when not given)."""

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._ready: bool | None = None  # None: not tried yet

    def _start(self) -> bool:
        if self._ready is None:
            try:
                if self._nvml is None:
                    self._nvml = importlib.import_module("pynvml")
                self._nvml.nvmlInit()
                self._ready = True
            except Exception as e:  # no package, no driver, no device: unknown, said once
                log.warning("GPU memory is not metered: NVML unavailable (%s); install "
                            "berth-serve[gpu] on a GPU host", e)
                self._ready = False
        return self._ready

    def used_by(self, pids: Collection[int], devices: Sequence[int]) -> int | None:
        """Bytes that `pids` hold on `devices` (NVML indexes); None when unreadable."""
        if not devices or not self._start():
            return None
        nvml = self._nvml
        total = 0
        try:
            for index in devices:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    used = getattr(proc, "usedGpuMemory", None)
                    if proc.pid in pids and used is not None:
                        total += int(used)
        except Exception as e:  # a device gone, a driver reset: this reading is unknown
            log.warning("reading GPU memory failed: %s", e)
            return None
        return total

    def close(self) -> None:
        if self._ready:
            try:
                self._nvml.nvmlShutdown()
            except Exception as e:
                log.debug("nvmlShutdown: %s", e)
        self._ready = None
