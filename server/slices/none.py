"""The `none` driver: no cgroups (not root, no delegation). Limits are reported, not
enforced; CPUs are pinned with sched_setaffinity by the engine (BERTH_CPUS)."""

from __future__ import annotations

from server.slices.base import Slice, SliceInfo, SliceSpec


class NoneDriver:
    name = "none"
    enforced = False

    def create(self, spec: SliceSpec) -> Slice:
        info = SliceInfo(driver=self.name, path=None,
                         cpus=list(spec.cores) if spec.cores is not None else None,
                         cpus_shared=spec.cores_shared, cpu_quota=float(spec.cpus),
                         memory_limit_bytes=spec.memory_bytes, pids_limit=None,
                         gpus=list(spec.gpus), enforced=False)
        # no cgroup to read it from: the engine sizes what it decodes at once from this
        env = {"OMP_NUM_THREADS": str(spec.cpus),
               "BERTH_MEMORY_LIMIT_BYTES": str(spec.memory_bytes)}
        if spec.cores is not None:
            env["BERTH_CPUS"] = ",".join(map(str, spec.cores))
        if spec.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, spec.gpus))
        return Slice(info=info, env=env)

    def cleanup_stale(self) -> list[str]:
        return []

    def remove_parent(self) -> None:
        pass
