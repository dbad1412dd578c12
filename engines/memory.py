"""How much memory this engine may use: the limit of the cgroup it runs in.

The server starts each engine inside its deployment's slice (a memory cgroup), so the
engine reads its own limit from there: cgroup v2 `memory.max`, or v1
`memory.limit_in_bytes`, of its cgroup and every ancestor (the smallest wins).
`BERTH_MEMORY_LIMIT_BYTES`, where set, overrides what the cgroup says (a launcher that
enforces no cgroup may still tell the engine its tier's memory). None: no limit known.
Request handlers size what they may decode at once from it (`engines.image_input`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

MEMORY_LIMIT_ENV = "BERTH_MEMORY_LIMIT_BYTES"
# cgroup v1 writes "no limit" as a page-rounded LONG_MAX; anything this big is no limit.
_NO_LIMIT = 1 << 60


def memory_limit_bytes(proc_cgroup: str = "/proc/self/cgroup",
                       cgroup_root: str = "/sys/fs/cgroup") -> int | None:
    """The memory this process may use, in bytes; None where no limit is known."""
    override = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if override:
        try:
            value = int(override)
        except ValueError:
            log.warning("%s=%r is not a number of bytes; ignored", MEMORY_LIMIT_ENV, override)
        else:
            return value if value > 0 else None
    try:
        lines = Path(proc_cgroup).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    root = Path(cgroup_root)
    limits: list[int] = []
    for line in lines:
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        if not path:
            continue
        if "memory" in controllers.split(","):  # v1: the memory hierarchy
            limits += _walk_up(root / "memory", path, "memory.limit_in_bytes")
        elif controllers == "":  # v2: the unified hierarchy (alone, or beside v1)
            for base in (root, root / "unified"):
                limits += _walk_up(base, path, "memory.max")
    return min(limits) if limits else None


def _walk_up(base: Path, path: str, name: str) -> list[int]:
    """The limits in `name` of the cgroup at `path` under `base` and of its ancestors."""
    found: list[int] = []
    group = base / path.strip("/")
    while True:
        try:
            text = (group / name).read_text(encoding="ascii").strip()
        except OSError:
            text = ""
        if text.isdigit() and 0 < int(text) < _NO_LIMIT:
            found.append(int(text))
        if group == base or base not in group.parents:
            return found
        group = group.parent
