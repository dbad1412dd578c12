"""The slice interface: what the supervisor asks of a driver, whatever enforces it.

A driver makes one slice per deployment (`berth/<name>`). A slice's `command_prefix` is
put before the engine's argv: it joins the slice and then execs the engine, so the
engine, its threads and its children are inside from their first instruction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

# How a join prefix fails: the supervisor maps this exit status to "could not join slice".
EXIT_JOIN_FAILED = 97


class SliceError(RuntimeError):
    """A slice cannot be made (permissions, a controller missing, bad values)."""


@dataclass(frozen=True)
class SliceSpec:
    name: str  # the deployment name, a DNS label (safe in paths)
    cpus: int  # CFS quota, in CPUs
    memory_bytes: int  # hard limit; no swap beyond it
    pids_max: int
    cores: tuple[int, ...] | None = None  # cpuset; None: no pinning
    cores_shared: bool = False  # True when the cores are shared with other deployments
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class SliceInfo:
    """The deployment JSON's `slice` block."""

    driver: str
    path: str | None
    cpus: list[int] | None  # cores it may run on
    cpus_shared: bool
    cpu_quota: float  # CPUs of CFS quota
    memory_limit_bytes: int
    pids_limit: int | None
    gpus: list[int]
    enforced: bool

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SliceUsage:
    cpu_seconds: float  # total CPU time of everything in the slice
    memory_bytes: int
    memory_peak_bytes: int
    oom_kills: int  # processes the kernel killed for the slice's memory limit


@dataclass
class Slice:
    info: SliceInfo
    command_prefix: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def usage(self) -> SliceUsage | None:
        """Current readings; None where the driver cannot read them."""
        return None

    def remove(self) -> None:
        """Delete the slice once its processes are gone (idempotent)."""


class Driver(Protocol):
    name: str
    enforced: bool

    def create(self, spec: SliceSpec) -> Slice:
        """Make the slice; SliceError when it cannot be made."""
        ...

    def cleanup_stale(self) -> list[str]:
        """Remove `berth/*` slices left by a server that died; kill what is in them."""
        ...

    def remove_parent(self) -> None:
        """Remove the (empty) parent of the slices when the server stops."""
        ...
