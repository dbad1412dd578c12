"""cgroup v1 driver: one dir per deployment in each hierarchy, under the server's own
cgroup: `<root>/<controller>/<own path>/<parent>/<name>` (so the slices nest inside
whatever limits the server itself has). Plain file writes; see NOTES.md "cgroups here".
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

from server.slices import common
from server.slices.base import Slice, SliceError, SliceInfo, SliceSpec, SliceUsage

log = logging.getLogger(__name__)

CONTROLLERS = ("cpuset", "cpu", "cpuacct", "memory", "pids")
GPU_CONTROLLERS = ("devices",)
NVIDIA_MAJOR = 195  # /dev/nvidia<N> (minor N); nvidiactl 255, nvidia-modeset 254


@dataclass
class V1Slice(Slice):
    dirs: dict[str, Path] = field(default_factory=dict)  # controller -> slice dir

    def _distinct(self) -> list[Path]:
        return list(dict.fromkeys(self.dirs.values()))  # co-mounted cpu,cpuacct: one dir

    def usage(self) -> SliceUsage | None:
        try:
            mem = self.dirs["memory"]
            return SliceUsage(
                cpu_seconds=int(common.read_text(self.dirs["cpuacct"] / "cpuacct.usage")) / 1e9,
                memory_bytes=int(common.read_text(mem / "memory.usage_in_bytes")),
                memory_peak_bytes=int(common.read_text(mem / "memory.max_usage_in_bytes")),
                oom_kills=common.read_keyed(mem / "memory.oom_control").get("oom_kill", 0),
            )
        except (OSError, ValueError, KeyError):
            return None

    def remove(self) -> None:
        """SIGKILL whatever is still inside (by pid), then rmdir in every hierarchy."""
        remove_dirs(self._distinct())


def remove_dirs(dirs: list[Path]) -> None:
    for d in dirs:
        common.kill_all(d / "cgroup.procs")
    for d in dirs:
        common.remove_dir(d)


class CgroupV1Driver:
    name = "cgroup-v1"
    enforced = True

    def __init__(self, root: str | os.PathLike[str] = "/sys/fs/cgroup", parent: str = "berth",
                 *, dev_dir: str | os.PathLike[str] = "/dev") -> None:
        self.root = Path(root)
        # slices are made from worker threads: one at a time (they share the parent dir)
        self._lock = threading.Lock()
        self.parent = parent
        self.dev_dir = Path(dev_dir)

    # -- where things are

    def bases(self, controllers: tuple[str, ...]) -> dict[str, Path]:
        """controller -> the server's own cgroup dir in that hierarchy."""
        try:
            own = common.own_cgroups()
        except OSError as e:
            raise SliceError(f"cannot read /proc/self/cgroup: {e.strerror}") from e
        out: dict[str, Path] = {}
        for c in controllers:
            mount = self.root / c
            if not (mount / "cgroup.procs").is_file():
                raise SliceError(f"cgroup v1: no {c} hierarchy at {mount}")
            out[c] = common.under(mount.resolve(), own.get(c, "/"))
        return out

    def probe(self) -> str:
        """A one-line description if slices can be made here; SliceError saying why not."""
        bases = self.bases(CONTROLLERS)
        probe_name = f"{self.parent}-probe-{os.getpid()}"
        for c, base in bases.items():
            d = base / probe_name
            try:
                d.mkdir()
            except OSError as e:
                hint = " (not root?)" if isinstance(e, PermissionError) else ""
                raise SliceError(f"cgroup v1: cannot create a cgroup in {base}: "
                                 f"{e.strerror}{hint}") from e
            ok = (d / "cgroup.procs").is_file()
            os.rmdir(d)
            if not ok:
                raise SliceError(f"cgroup v1: {self.root / c} is not a cgroup filesystem")
        return f"cgroup v1 ({', '.join(sorted(bases))} writable)"

    # -- Driver

    def create(self, spec: SliceSpec) -> Slice:
        with self._lock:
            return self._create(spec)

    def _create(self, spec: SliceSpec) -> Slice:
        common.check_spec(spec)
        bases = self.bases(CONTROLLERS + (GPU_CONTROLLERS if spec.gpus else ()))
        made: list[Path] = []
        try:
            for c, base in bases.items():
                parent = base / self.parent
                if not parent.exists():
                    common.make_dir(parent)
                    made.append(parent)
                if c == "cpuset":
                    _init_cpuset_parent(parent, base)
            dirs = {c: base / self.parent / spec.name for c, base in bases.items()}
            for d in dict.fromkeys(dirs.values()):
                common.make_dir(d)
                made.append(d)
            cores = self._write_limits(spec, dirs)
        except SliceError:
            for d in reversed(made):
                try:
                    os.rmdir(d)
                except OSError:
                    pass  # a parent other slices use, or a dir already gone
            raise
        info = SliceInfo(driver=self.name, path=f"{self.parent}/{spec.name}", cpus=cores,
                         cpus_shared=spec.cores_shared, cpu_quota=float(spec.cpus),
                         memory_limit_bytes=spec.memory_bytes, pids_limit=spec.pids_max,
                         gpus=list(spec.gpus), enforced=True)
        distinct = list(dict.fromkeys(dirs.values()))
        log.info("slice %s created (%s)", info.path, ", ".join(dirs))
        return V1Slice(info=info, dirs=dirs, env=common.slice_env(spec),
                       command_prefix=common.join_prefix([d / "cgroup.procs" for d in distinct]))

    def _write_limits(self, spec: SliceSpec, dirs: dict[str, Path]) -> list[int]:
        cpuset = dirs["cpuset"]
        allowed = common.parse_cpulist(common.get_value(cpuset.parent / "cpuset.cpus"))
        common.check_cores(spec, allowed)
        cores = sorted(spec.cores) if spec.cores is not None else allowed
        common.set_value(cpuset / "cpuset.cpus", common.format_cpulist(cores))
        common.set_value(cpuset / "cpuset.mems", common.get_value(cpuset.parent / "cpuset.mems"))

        common.set_value(dirs["cpu"] / "cpu.cfs_period_us", common.CFS_PERIOD_US)
        common.set_value(dirs["cpu"] / "cpu.cfs_quota_us", spec.cpus * common.CFS_PERIOD_US)

        mem = dirs["memory"]
        common.set_value(mem / "memory.limit_in_bytes", spec.memory_bytes)
        if (mem / "memory.memsw.limit_in_bytes").exists():  # absent without swap accounting
            common.set_value(mem / "memory.memsw.limit_in_bytes", spec.memory_bytes)
        common.set_value(mem / "memory.swappiness", 0)

        common.set_value(dirs["pids"] / "pids.max", spec.pids_max)

        if spec.gpus:
            minors = nvidia_minors(self.dev_dir)
            if not minors:
                log.warning("slice %s: gpus %s given but no nvidia<N> device in %s",
                            spec.name, list(spec.gpus), self.dev_dir)
            for index, minor in sorted(minors.items()):
                if index not in spec.gpus:  # the default allows all; deny the other GPUs
                    common.set_value(dirs["devices"] / "devices.deny",
                                     f"c {NVIDIA_MAJOR}:{minor} rwm")
        return cores

    def cleanup_stale(self) -> list[str]:
        """Kill (by pid) and remove every `<parent>/*` slice; returns their names."""
        try:
            bases = self.bases(CONTROLLERS + GPU_CONTROLLERS)
        except SliceError as e:
            log.warning("cleanup_stale: %s", e)
            return []
        by_name: dict[str, list[Path]] = {}
        for base in dict.fromkeys(bases.values()):
            parent = base / self.parent
            if parent.is_dir():
                for d in parent.iterdir():
                    if d.is_dir():
                        by_name.setdefault(d.name, []).append(d)
        removed = []
        for name, dirs in sorted(by_name.items()):
            try:
                remove_dirs(dirs)
            except SliceError as e:
                log.error("stale slice %s/%s not removed: %s", self.parent, name, e)
                continue
            log.info("stale slice %s/%s removed", self.parent, name)
            removed.append(name)
        return removed

    def remove_parent(self) -> None:
        """rmdir `<parent>` in every hierarchy if no slice is left in it (best effort)."""
        try:
            bases = self.bases(CONTROLLERS + GPU_CONTROLLERS)
        except SliceError:
            return
        for base in dict.fromkeys(bases.values()):
            try:
                os.rmdir(base / self.parent)
            except OSError:
                pass


def _init_cpuset_parent(parent: Path, base: Path) -> None:
    """A v1 cpuset child starts with empty cpus/mems: copy them down from the base."""
    for key in ("cpuset.cpus", "cpuset.mems"):
        if not common.get_value(parent / key):
            common.set_value(parent / key, common.get_value(base / key))


def nvidia_minors(dev_dir: Path) -> dict[int, int]:
    """GPU index -> device minor, for each /dev/nvidia<N> character device of major 195."""
    out: dict[int, int] = {}
    try:
        entries = list(dev_dir.iterdir())
    except OSError:
        return out
    for p in entries:
        m = re.fullmatch(r"nvidia(\d+)", p.name)
        if not m:
            continue
        try:
            st = p.stat()
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == NVIDIA_MAJOR:
            out[int(m.group(1))] = os.minor(st.st_rdev)
    return out
