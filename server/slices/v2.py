"""cgroup v2 driver: one dir per deployment, `<root>/<own path>/<parent>/<name>`.

v2 lets only leaf cgroups hold processes once controllers are enabled below them. When the
server's own cgroup holds the server (a systemd service with Delegate=yes does exactly
that) the driver moves the server into the leaf `<own>/<parent>.server` first; when it
holds other processes too, it stops with a SliceError that explains delegation.

`root` is a parameter so tests can run the driver against a tree laid out like cgroup v2;
`make_dir`/`remove_dir`/`write_file` are the module-level names they stand in for.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from server.slices.base import Slice, SliceError, SliceInfo, SliceSpec, SliceUsage
from server.slices.common import (
    CFS_PERIOD_US,
    check_cores,
    check_spec,
    format_cpulist,
    get_value,
    join_prefix,
    kill_all,
    make_dir,
    own_cgroups,
    parse_cpulist,
    read_keyed,
    read_pids,
    read_text,
    remove_dir,
    set_value,
    slice_env,
    under,
    write_file,
)

log = logging.getLogger(__name__)

REQUIRED = ("cpu", "memory", "pids")
OPTIONAL = ("cpuset",)
DELEGATION_HINT = ("run berth in a cgroup delegated to it that holds only the server, e.g. a "
                   "systemd service with Delegate=yes, or `systemd-run -p Delegate=yes ...`")


@dataclass
class V2Slice(Slice):
    dir: Path = field(default_factory=Path)
    peak_seen: int = field(default=0, repr=False)  # for kernels without memory.peak

    def usage(self) -> SliceUsage | None:
        try:
            current = int(read_text(self.dir / "memory.current"))
            peak_file = self.dir / "memory.peak"
            peak = int(read_text(peak_file)) if peak_file.exists() else current
            self.peak_seen = max(self.peak_seen, peak, current)
            return SliceUsage(
                cpu_seconds=read_keyed(self.dir / "cpu.stat")["usage_usec"] / 1e6,
                memory_bytes=current,
                memory_peak_bytes=self.peak_seen,
                oom_kills=read_keyed(self.dir / "memory.events").get("oom_kill", 0),
            )
        except (OSError, ValueError, KeyError):
            return None

    def remove(self) -> None:
        """Kill whatever is still inside (cgroup.kill, else SIGKILL by pid), then rmdir."""
        remove_slice_dir(self.dir)


def remove_slice_dir(d: Path) -> None:
    if not d.is_dir():
        return
    kill = d / "cgroup.kill"
    if kill.exists():
        set_value(kill, 1)
    kill_all(d / "cgroup.procs")  # waits until empty; SIGKILLs by pid without cgroup.kill
    remove_dir(d)


class CgroupV2Driver:
    name = "cgroup-v2"
    enforced = True

    def __init__(self, root: str | os.PathLike[str] = "/sys/fs/cgroup", parent: str = "berth",
                 *, base: str | None = None) -> None:
        """`base`: the cgroup (relative to root) to nest under; default: the server's own."""
        self.root = Path(root)
        # slices are made from worker threads: one at a time (they share the parent dir)
        self._lock = threading.Lock()
        self.parent = parent
        self._base = base

    # -- where things are

    @property
    def own(self) -> Path:
        if self._base is not None:
            return under(self.root, self._base)
        try:
            path = own_cgroups().get("", "/")
        except OSError as e:
            raise SliceError(f"cannot read /proc/self/cgroup: {e.strerror}") from e
        own = under(self.root, path)
        return own.parent if own.name == self.leaf_name else own  # moved there earlier

    @property
    def leaf_name(self) -> str:
        return f"{self.parent}.server"

    def controllers(self) -> list[str]:
        """Controllers the slices get; SliceError if cpu, memory or pids are not offered."""
        own = self.own
        try:
            offered = read_text(own / "cgroup.controllers").split()
        except OSError as e:
            raise SliceError(f"no cgroup v2 at {own} (cgroup.controllers: {e.strerror})") from e
        missing = [c for c in REQUIRED if c not in offered]
        if missing:
            raise SliceError(f"cgroup v2: {own} does not offer {', '.join(missing)} "
                             f"(cgroup.controllers: {' '.join(offered) or 'empty'}); "
                             f"{DELEGATION_HINT}")
        return [c for c in REQUIRED + OPTIONAL if c in offered]

    def probe(self) -> str:
        """A one-line description if slices can be made here; SliceError saying why not."""
        controllers = self.controllers()
        own = self.own
        probe = own / f"{self.parent}-probe-{os.getpid()}"
        make_dir(probe)
        ok = (probe / "cgroup.procs").is_file()
        remove_dir(probe)
        if not ok:
            raise SliceError(f"cgroup v2: {self.root} is not a cgroup filesystem")
        self._check_delegable(own, controllers)
        return f"cgroup v2 ({', '.join(controllers)} delegated at {own})"

    def _check_delegable(self, own: Path, controllers: list[str]) -> None:
        # The real root cgroup (no cgroup.events there) may hold processes and children;
        # a container's namespaced root is an ordinary cgroup and may not.
        if not (own / "cgroup.events").exists():
            return
        enabled = get_value(own / "cgroup.subtree_control").split()
        if all(c in enabled for c in controllers):
            return
        others = [p for p in read_pids(own / "cgroup.procs") if p != os.getpid()]
        if others:
            raise SliceError(self._busy_message(own, others))

    def _busy_message(self, own: Path, others: list[int]) -> str:
        return (f"cgroup v2: cannot enable controllers below {own}: it holds "
                f"{len(others)} process(es) besides the server, and v2 lets only leaf "
                f"cgroups hold processes; {DELEGATION_HINT}")

    def _enable(self, d: Path, controllers: list[str]) -> None:
        enabled = get_value(d / "cgroup.subtree_control").split()
        todo = " ".join(f"+{c}" for c in controllers if c not in enabled)
        if not todo:
            return
        try:
            write_file(d / "cgroup.subtree_control", todo)
            return
        except OSError as e:
            if e.errno != errno.EBUSY or d != self.own:
                raise SliceError(f"cgroup v2: cannot write {todo!r} to "
                                 f"{d / 'cgroup.subtree_control'}: {e.strerror}; "
                                 f"{DELEGATION_HINT}") from e
        self._move_self_to_leaf(d)
        set_value(d / "cgroup.subtree_control", todo)

    def _move_self_to_leaf(self, own: Path) -> None:
        others = [p for p in read_pids(own / "cgroup.procs") if p != os.getpid()]
        if others:
            raise SliceError(self._busy_message(own, others))
        leaf = own / self.leaf_name
        if not leaf.is_dir():
            make_dir(leaf)
        set_value(leaf / "cgroup.procs", os.getpid())
        log.info("moved the server (pid %d) into %s to delegate controllers below %s",
                 os.getpid(), leaf, own)

    def _ensure_parent(self) -> tuple[Path, list[str]]:
        controllers = self.controllers()
        self._enable(self.own, controllers)
        parent = self.own / self.parent
        if not parent.is_dir():
            make_dir(parent)
        self._enable(parent, controllers)
        return parent, controllers

    # -- Driver

    def create(self, spec: SliceSpec) -> Slice:
        with self._lock:
            return self._create(spec)

    def _create(self, spec: SliceSpec) -> Slice:
        check_spec(spec)
        parent, controllers = self._ensure_parent()
        if spec.cores is not None and "cpuset" not in controllers:
            raise SliceError(f"slice {spec.name}: cores {list(spec.cores)} asked for, but the "
                             f"cpuset controller is not offered at {self.own}")
        d = parent / spec.name
        make_dir(d)
        try:
            cores = self._write_limits(spec, d)
        except SliceError:
            remove_dir(d)
            raise
        info = SliceInfo(driver=self.name, path=f"{self.parent}/{spec.name}", cpus=cores,
                         cpus_shared=spec.cores_shared, cpu_quota=float(spec.cpus),
                         memory_limit_bytes=spec.memory_bytes, pids_limit=spec.pids_max,
                         gpus=list(spec.gpus), enforced=True)
        log.info("slice %s created in %s", info.path, d)
        return V2Slice(info=info, dir=d, env=slice_env(spec),
                       command_prefix=join_prefix([d / "cgroup.procs"]))

    def _write_limits(self, spec: SliceSpec, d: Path) -> list[int] | None:
        set_value(d / "cpu.max", f"{spec.cpus * CFS_PERIOD_US} {CFS_PERIOD_US}")
        set_value(d / "memory.max", spec.memory_bytes)
        if (d / "memory.swap.max").exists():  # absent without swap accounting
            set_value(d / "memory.swap.max", 0)
        set_value(d / "pids.max", spec.pids_max)
        if spec.cores is not None:
            allowed = _cpulist(d.parent / "cpuset.cpus.effective")
            if allowed:
                check_cores(spec, allowed)
            set_value(d / "cpuset.cpus", format_cpulist(spec.cores))
        return _cpulist(d / "cpuset.cpus.effective") or (
            sorted(spec.cores) if spec.cores is not None else None)

    def cleanup_stale(self) -> list[str]:
        """Kill and remove every `<parent>/*` slice; returns their names."""
        try:
            parent = self.own / self.parent
        except SliceError as e:
            log.warning("cleanup_stale: %s", e)
            return []
        if not parent.is_dir():
            return []
        removed = []
        for d in sorted(p for p in parent.iterdir() if p.is_dir()):
            try:
                remove_slice_dir(d)
            except SliceError as e:
                log.error("stale slice %s/%s not removed: %s", self.parent, d.name, e)
                continue
            log.info("stale slice %s/%s removed", self.parent, d.name)
            removed.append(d.name)
        return removed

    def remove_parent(self) -> None:
        """rmdir `<parent>` if no slice is left in it (best effort)."""
        try:
            remove_dir(self.own / self.parent, timeout=0)
        except SliceError:
            pass


def _cpulist(path: Path) -> list[int]:
    try:
        return parse_cpulist(read_text(path))
    except (OSError, ValueError):
        return []
