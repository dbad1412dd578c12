"""What both cgroup drivers share: writes with clear errors, cpu lists, the join prefix,
killing what is left in a cgroup, and rmdir that waits while exiting tasks drain."""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from pathlib import Path

from server.slices.base import EXIT_JOIN_FAILED, SliceError, SliceSpec

log = logging.getLogger(__name__)

# `sh -c JOIN_SCRIPT berth-join <procs file>... -- <argv>`: the shell writes its own pid
# into every procs file, then execs argv, so argv starts inside the slice. No preexec_fn.
JOIN_SCRIPT = (
    'while [ "$#" -gt 0 ]; do '
    'if [ "$1" = -- ]; then shift; [ "$#" -gt 0 ] || break; exec "$@"; fi; '
    f'echo "$$" > "$1" || exit {EXIT_JOIN_FAILED}; shift; '
    f'done; exit {EXIT_JOIN_FAILED}'
)

CFS_PERIOD_US = 100_000
DRAIN_TIMEOUT_S = 5.0  # how long kill/rmdir wait for exiting tasks to leave a cgroup


def join_prefix(procs_files: list[Path]) -> list[str]:
    return ["/bin/sh", "-c", JOIN_SCRIPT, "berth-join", *map(str, procs_files), "--"]


def own_cgroups(proc_file: str = "/proc/self/cgroup") -> dict[str, str]:
    """controller -> this process's cgroup path; the v2 entry is under the key ""."""
    out: dict[str, str] = {}
    with open(proc_file) as f:
        for line in f:
            _id, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                out[c] = path
    return out


def under(mount: Path, cgroup_path: str) -> Path:
    return mount / cgroup_path.lstrip("/")


def write_file(path: Path, value: str) -> None:
    """One write(2) of `value` (no O_CREAT: a missing cgroup file is an error)."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def set_value(path: Path, value: str | int) -> None:
    try:
        write_file(path, str(value))
    except OSError as e:
        raise SliceError(f"cannot write {str(value)!r} to {path}: {e.strerror}") from e


def read_text(path: Path) -> str:
    return path.read_text().strip()


def get_value(path: Path) -> str:
    """read_text, with a SliceError saying which file could not be read."""
    try:
        return read_text(path)
    except OSError as e:
        raise SliceError(f"cannot read {path}: {e.strerror}") from e


def read_pids(procs: Path) -> list[int]:
    try:
        return [int(x) for x in procs.read_text().split()]
    except FileNotFoundError:
        return []


def read_keyed(path: Path) -> dict[str, int]:
    """`key value` lines (memory.events, cpu.stat, memory.oom_control) as a dict."""
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def parse_cpulist(text: str) -> list[int]:
    """'0-2,5' -> [0, 1, 2, 5]."""
    cores: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cores.update(range(int(lo), int(hi or lo) + 1))
    return sorted(cores)


def format_cpulist(cores: list[int] | tuple[int, ...]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    runs: list[list[int]] = []
    for c in sorted(set(cores)):
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def check_spec(spec: SliceSpec) -> None:
    if spec.cpus < 1 or spec.memory_bytes < 1 or spec.pids_max < 1:
        raise SliceError(f"slice {spec.name}: cpus, memory and pids_max must be positive "
                         f"(got {spec.cpus}, {spec.memory_bytes}, {spec.pids_max})")
    if not spec.name or "/" in spec.name or spec.name.startswith("."):
        raise SliceError(f"slice name {spec.name!r} is not a safe directory name")
    if spec.cores is not None and not spec.cores:
        raise SliceError(f"slice {spec.name}: an empty cpuset (cores=()) cannot run anything")


def check_cores(spec: SliceSpec, allowed: list[int]) -> None:
    if spec.cores is None:
        return
    outside = sorted(set(spec.cores) - set(allowed))
    if outside:
        raise SliceError(f"slice {spec.name}: cores {format_cpulist(outside)} are outside the "
                         f"cpuset the server may use ({format_cpulist(allowed)})")


def slice_env(spec: SliceSpec) -> dict[str, str]:
    env = {"OMP_NUM_THREADS": str(spec.cpus)}
    if spec.gpus:
        # nvidia-smi numbering (PCI bus order), the numbering operators assign GPUs in.
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, spec.gpus))
    return env


def make_dir(path: Path) -> None:
    """mkdir a slice dir; an empty leftover is replaced, one with processes is an error."""
    try:
        path.mkdir()
        return
    except FileExistsError:
        pass
    except OSError as e:
        raise SliceError(f"cannot create cgroup {path}: {e.strerror}"
                         f"{' (not root?)' if e.errno in (errno.EACCES, errno.EPERM) else ''}"
                         ) from e
    try:
        os.rmdir(path)
        path.mkdir()
    except OSError as e:
        raise SliceError(f"cgroup {path} already exists and cannot be replaced "
                         f"({e.strerror}): processes of an earlier server? "
                         "cleanup_stale() removes it") from e


def remove_dir(path: Path, timeout: float = DRAIN_TIMEOUT_S) -> None:
    """rmdir, retrying on EBUSY while exiting tasks drain; a missing dir is fine."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise SliceError(f"cannot remove cgroup {path}: {e.strerror}") from e
        time.sleep(0.02)


def kill_all(procs: Path, timeout: float = DRAIN_TIMEOUT_S) -> int:
    """SIGKILL (by pid) every process listed in `procs` until it lists none; returns how
    many were killed. SliceError if some are still there after `timeout`."""
    deadline = time.monotonic() + timeout
    killed: set[int] = set()
    while True:
        pids = [p for p in read_pids(procs) if p > 1 and p != os.getpid()]
        if not pids:
            return len(killed)
        if time.monotonic() > deadline:
            raise SliceError(f"processes {pids} are still in {procs.parent} after SIGKILL")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
