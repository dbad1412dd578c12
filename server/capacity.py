"""Node capacity and admission: which deployments hold which CPUs, memory and GPUs.

A deployment holds its tier's share from the moment it is admitted (created or
started) until a person stops or deletes it, or it fails for good; a crash that is
being retried keeps its share. Cores are handed out exclusively while enough are free;
after that a deployment runs on the cores shared by all, and its JSON says so.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from server.config import NodeConfig, Tier, parse_size

log = logging.getLogger(__name__)
GiB = 1024**3


class InsufficientCapacity(Exception):
    """Not enough is free now; stopping or deleting something may make room."""


class NeverFits(InsufficientCapacity):
    """The tier needs more than the whole node has: no amount of waiting helps."""


@dataclass(frozen=True)
class Hold:
    tier: Tier
    cores: tuple[int, ...]
    shared: bool
    gpus: tuple[int, ...]


@dataclass
class Node:
    cores: tuple[int, ...]  # the cores this server may use
    cpus: float  # schedulable CPUs (cores x overcommit, or as configured)
    memory_bytes: int
    gpus: int
    overcommit: float
    holds: dict[str, Hold] = field(default_factory=dict)

    @classmethod
    def from_config(cls, node: NodeConfig, *, cores: list[int], memory_bytes: int,
                    gpus: int) -> Node:
        cpus = len(cores) if node.cpus == "auto" else int(node.cpus)
        memory = memory_bytes if node.memory == "auto" else parse_size(node.memory)
        n_gpus = gpus if node.gpus == "auto" else int(node.gpus)
        return cls(cores=tuple(cores), cpus=cpus * node.overcommit,
                   memory_bytes=int(memory * node.overcommit), gpus=n_gpus,
                   overcommit=node.overcommit)

    # --- accounting -----------------------------------------------------------------

    def allocated(self) -> tuple[int, int, int]:
        holds = self.holds.values()
        return (sum(h.tier.cpus for h in holds), sum(h.tier.memory_bytes for h in holds),
                sum(h.tier.gpus for h in holds))

    def free(self) -> tuple[float, int, int]:
        cpus, memory, gpus = self.allocated()
        return self.cpus - cpus, self.memory_bytes - memory, self.gpus - gpus

    def admit(self, name: str, tier: Tier) -> Hold:
        """Hold `tier`'s share for `name`; InsufficientCapacity says what is free."""
        if name in self.holds:
            return self.holds[name]
        if tier.cpus > self.cpus or tier.memory_bytes > self.memory_bytes \
                or tier.gpus > self.gpus:
            raise NeverFits(
                f"tier {tier.name} needs {tier.cpus} CPU, {tier.memory_bytes / GiB:g} GiB"
                f"{f', {tier.gpus} GPU' if tier.gpus else ''}; this whole node has "
                f"{self.cpus:g} CPU, {self.memory_bytes / GiB:.1f} GiB, {self.gpus} GPU"
                " (see [node] in config.toml)")
        cpus, memory, gpus = self.free()
        if tier.cpus > cpus or tier.memory_bytes > memory or tier.gpus > gpus:
            raise InsufficientCapacity(
                f"tier {tier.name} needs {tier.cpus} CPU, {tier.memory_bytes / GiB:g} GiB"
                f"{f', {tier.gpus} GPU' if tier.gpus else ''}; this node has "
                f"{max(cpus, 0):g} CPU, {max(memory, 0) / GiB:.1f} GiB"
                f"{f', {max(gpus, 0)} GPU' if self.gpus else ''} free "
                f"(of {self.cpus:g} CPU, {self.memory_bytes / GiB:.1f} GiB"
                f"{f', {self.gpus} GPU' if self.gpus else ''})")
        cores, shared = self._cores_for(tier.cpus)
        hold = Hold(tier, cores, shared, self._gpus_for(tier.gpus))
        self.holds[name] = hold
        log.info("admitted %s (%s): cores %s%s", name, tier.name, list(cores),
                 " shared" if shared else "")
        return hold

    def release(self, name: str) -> None:
        if self.holds.pop(name, None) is not None:
            log.info("released the share of %s", name)

    def _cores_for(self, n: int) -> tuple[tuple[int, ...], bool]:
        taken = {c for h in self.holds.values() if not h.shared for c in h.cores}
        free = [c for c in self.cores if c not in taken]
        if len(free) >= n:
            return tuple(free[:n]), False
        return self.cores, True

    def _gpus_for(self, n: int) -> tuple[int, ...]:
        taken = {g for h in self.holds.values() for g in h.gpus}
        return tuple([g for g in range(self.gpus) if g not in taken][:n])


def detect_gpus() -> int:
    """NVIDIA GPUs visible here: NVML where installed, else the driver's /proc entries."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML, no driver: fall through
        pass
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0
