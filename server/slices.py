"""Resource slices for engines.

This first version has one driver, `none`: nothing is enforced and the deployment JSON
says so. The cgroup v1/v2 drivers arrive with the hardware-tiers work behind the same
interface: `create(name, tier) -> Slice`, whose `command_prefix` joins the slice before
the engine execs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from server.config import Tier


@dataclass(frozen=True)
class SliceInfo:
    driver: str
    path: str | None
    cpus: list[int] | None
    cpu_quota: float
    memory_limit_bytes: int
    pids_limit: int | None
    gpus: list[int]
    enforced: bool

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Slice:
    info: SliceInfo
    # argv run before the engine: it joins the slice, then execs the engine.
    command_prefix: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def remove(self) -> None:
        """Release what the slice holds (nothing for the none driver)."""


class NoneDriver:
    """No cgroups: limits are reported, not enforced."""

    name = "none"

    def create(self, deployment: str, tier: Tier) -> Slice:
        info = SliceInfo(driver=self.name, path=None, cpus=None, cpu_quota=float(tier.cpus),
                         memory_limit_bytes=tier.memory_bytes, pids_limit=None,
                         gpus=[], enforced=False)
        return Slice(info=info, env={"OMP_NUM_THREADS": str(tier.cpus)})
