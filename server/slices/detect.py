"""Which driver this machine supports, and what the server itself may use."""

from __future__ import annotations

import os
from pathlib import Path

from server.slices.base import Driver, SliceError
from server.slices.common import own_cgroups, under
from server.slices.none import NoneDriver
from server.slices.v1 import CgroupV1Driver
from server.slices.v2 import CgroupV2Driver

NOT_ENFORCED = "limits are NOT enforced"
REQUESTS = ("auto", "v1", "v2", "none")


def choose_driver(requested: str = "auto", root: str | os.PathLike[str] = "/sys/fs/cgroup",
                  parent: str = "berth") -> tuple[Driver, str]:
    """The driver and a one-line reason. An explicit `v1`/`v2` that cannot work raises
    SliceError (saying why); `auto` falls back to v1, then to `none`."""
    if requested not in REQUESTS:
        raise ValueError(f"slice driver {requested!r}: expected one of {', '.join(REQUESTS)}")
    if requested == "none":
        return NoneDriver(), f"none: requested; {NOT_ENFORCED}"
    v2 = CgroupV2Driver(root, parent)
    v1 = CgroupV1Driver(root, parent)
    if requested == "v2":
        return v2, v2.probe()
    if requested == "v1":
        return v1, v1.probe()
    reasons = []
    if (Path(root) / "cgroup.controllers").exists():  # a unified (v2-only) mount
        try:
            return v2, v2.probe()
        except SliceError as e:
            reasons.append(str(e))
    try:
        return v1, v1.probe()
    except SliceError as e:
        reasons.append(str(e))
    return NoneDriver(), f"none: {'; '.join(reasons)}; {NOT_ENFORCED}"


def node_cores() -> list[int]:
    """The cores the server may use (its own affinity, which its cpuset bounds)."""
    return sorted(os.sched_getaffinity(0))


def node_memory_bytes(root: str | os.PathLike[str] = "/sys/fs/cgroup") -> int:
    """MemTotal, or the server's own memory cgroup limit (or an ancestor's) if lower."""
    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    try:
        own = own_cgroups()
    except OSError:
        return total
    root = Path(root)
    candidates = []
    if "memory" in own:  # v1
        candidates.append((root / "memory", own["memory"], "memory.limit_in_bytes"))
    if "" in own:  # v2 (or the v2 part of a hybrid mount: no memory controller there)
        candidates.append((root, own[""], "memory.max"))
    return min([total] + [limit for c in candidates if (limit := _lowest_limit(*c)) is not None])


def _lowest_limit(mount: Path, path: str, key: str) -> int | None:
    """The lowest numeric `key` from the cgroup at `path` up to the mount's root."""
    d = under(mount, path)
    lowest: int | None = None
    while True:
        try:
            value = int((d / key).read_text().strip())
            lowest = value if lowest is None else min(lowest, value)
        except (OSError, ValueError):  # "max", or no such file here
            pass
        if d == mount or mount not in d.parents:
            return lowest
        d = d.parent
