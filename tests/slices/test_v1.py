"""The cgroup v1 driver against this machine's real hierarchies (root only)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server.slices import EXIT_JOIN_FAILED, CgroupV1Driver, SliceError, SliceSpec, node_cores
from server.slices.v1 import CONTROLLERS, V1Slice

from .conftest import Spawn

pytestmark = pytest.mark.cgroups

MiB = 1024**2

# Two threads that really run in parallel: sha256 over 1 MiB releases the GIL.
SPIN_TWO_THREADS = """
import hashlib, threading, time
buf = b"x" * (1 << 20)
def spin():
    end = time.monotonic() + 3
    while time.monotonic() < end:
        hashlib.sha256(buf).digest()
threads = [threading.Thread(target=spin) for _ in range(2)]
for t in threads: t.start()
for t in threads: t.join()
"""

ALLOCATE_400_MIB = """
b = bytearray(400 << 20)
for i in range(0, len(b), 4096):
    b[i] = 1
print("survived")
"""

SHOW_CGROUPS = """
import subprocess, sys
print(open("/proc/self/cgroup").read(), end="")
print("--child--")
sys.stdout.flush()
subprocess.run(["cat", "/proc/self/cgroup"], check=True)
"""

FORK_UNTIL_REFUSED = """
import os
r, w = os.pipe()
n = 0
try:
    for _ in range(200):
        if os.fork() == 0:
            os.close(w)
            os.read(r, 1)  # EOF when the parent exits
            os._exit(0)
        n += 1
    print("forked", n, "no-error")
except OSError as e:
    print("forked", n, e.errno)
"""


def spec(name: str, **kw: object) -> SliceSpec:
    values: dict = {"cpus": 1, "memory_bytes": 512 * MiB, "pids_max": 64}
    values.update(kw)
    return SliceSpec(name=name, **values)


def in_slice(cgroup_text: str, sl: V1Slice) -> dict[str, bool]:
    """controller -> whether this /proc/<pid>/cgroup text puts the task in the slice."""
    paths: dict[str, str] = {}
    for line in cgroup_text.splitlines():
        _id, controllers, path = line.split(":", 2)
        for c in controllers.split(","):
            paths[c] = path
    suffix = "/" + (sl.info.path or "")
    return {c: paths.get(c, "").endswith(suffix) for c in sl.dirs}


def test_cpu_quota_holds_two_threads_to_one_cpu(v1: CgroupV1Driver, spawn: Spawn) -> None:
    sl = v1.create(spec("cpu"))
    start = time.monotonic()
    p = spawn(sl, SPIN_TWO_THREADS)
    assert p.wait(timeout=30) == 0, p.communicate()
    elapsed = time.monotonic() - start
    usage = sl.usage()
    assert usage is not None
    used = usage.cpu_seconds / elapsed
    assert 0.5 <= used <= 1.15, f"{usage.cpu_seconds:.2f} CPU-s over {elapsed:.2f} s"
    sl.remove()


def test_memory_limit_oom_kills(v1: CgroupV1Driver, spawn: Spawn) -> None:
    sl = v1.create(spec("mem", memory_bytes=200 * MiB))
    p = spawn(sl, ALLOCATE_400_MIB)
    out, _err = p.communicate(timeout=30)
    assert p.returncode == -signal.SIGKILL
    assert "survived" not in out
    usage = sl.usage()
    assert usage is not None and usage.oom_kills == 1
    assert usage.memory_peak_bytes <= 200 * MiB
    sl.remove()


def test_process_and_its_child_are_in_the_slice_from_the_start(
        v1: CgroupV1Driver, spawn: Spawn) -> None:
    sl = v1.create(spec("member"))
    assert isinstance(sl, V1Slice)
    assert set(sl.dirs) >= set(CONTROLLERS)
    p = spawn(sl, SHOW_CGROUPS)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    own, child = out.split("--child--\n")
    assert all(in_slice(own, sl).values()), own
    assert all(in_slice(child, sl).values()), child
    sl.remove()


def test_pids_max_refuses_forks(v1: CgroupV1Driver, spawn: Spawn) -> None:
    sl = v1.create(spec("pids", pids_max=20))
    p = spawn(sl, FORK_UNTIL_REFUSED)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    word, n, outcome = out.split()
    assert word == "forked" and outcome == "11"  # EAGAIN
    assert 15 <= int(n) <= 19  # 20 tasks in all, the python process among them
    sl.remove()


def test_cpuset_cores_are_applied(v1: CgroupV1Driver, spawn: Spawn) -> None:
    cores = (node_cores()[-1],)
    sl = v1.create(spec("pinned", cores=cores))
    assert sl.info.cpus == list(cores)
    p = spawn(sl, "import os; print(sorted(os.sched_getaffinity(0)))")
    out, err = p.communicate(timeout=30)
    assert out.strip() == str(list(cores)), err
    sl.remove()

    unpinned = v1.create(spec("unpinned"))
    assert unpinned.info.cpus == node_cores()
    unpinned.remove()


def test_cores_outside_the_servers_cpuset_are_refused(v1: CgroupV1Driver) -> None:
    with pytest.raises(SliceError, match="outside the cpuset"):
        v1.create(spec("far", cores=(max(node_cores()) + 64,)))
    assert v1.cleanup_stale() == []  # nothing half-made was left


def test_info_env_and_prefix(v1: CgroupV1Driver) -> None:
    sl = v1.create(spec("info", cpus=2, memory_bytes=300 * MiB, pids_max=33))
    assert sl.info.enforced and sl.info.driver == "cgroup-v1"
    assert sl.info.path == f"{v1.parent}/info"
    assert (sl.info.cpu_quota, sl.info.memory_limit_bytes, sl.info.pids_limit) == (2.0,
                                                                                 300 * MiB, 33)
    assert sl.env == {"OMP_NUM_THREADS": "2"}
    assert sl.command_prefix[:4] == ["/bin/sh", "-c", sl.command_prefix[2], "berth-join"]
    assert sl.command_prefix[-1] == "--"
    assert isinstance(sl, V1Slice)
    cpu, mem = sl.dirs["cpu"], sl.dirs["memory"]
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "200000"
    assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
    assert int((mem / "memory.limit_in_bytes").read_text()) == 300 * MiB
    if (mem / "memory.memsw.limit_in_bytes").exists():
        assert int((mem / "memory.memsw.limit_in_bytes").read_text()) == 300 * MiB
    assert (mem / "memory.swappiness").read_text().strip() == "0"
    assert (sl.dirs["pids"] / "pids.max").read_text().strip() == "33"
    sl.remove()


def test_cleanup_stale_kills_and_removes_a_leftover(v1: CgroupV1Driver, spawn: Spawn) -> None:
    sl = v1.create(spec("stale"))
    assert isinstance(sl, V1Slice)
    p = spawn(sl, "import time; print('up', flush=True); time.sleep(120)")
    assert p.stdout is not None and p.stdout.readline() == "up\n"
    # a new server (a new driver) finds the slice its predecessor left
    again = CgroupV1Driver(parent=v1.parent)
    assert again.cleanup_stale() == ["stale"]
    assert p.wait(timeout=10) == -signal.SIGKILL
    assert not any(d.exists() for d in sl.dirs.values())
    assert sl.usage() is None


def test_remove_is_idempotent_and_kills_leftovers(v1: CgroupV1Driver, spawn: Spawn) -> None:
    sl = v1.create(spec("gone"))
    assert isinstance(sl, V1Slice)
    p = spawn(sl, "import time; print('up', flush=True); time.sleep(120)")
    assert p.stdout is not None and p.stdout.readline() == "up\n"
    sl.remove()
    assert p.wait(timeout=10) == -signal.SIGKILL
    sl.remove()
    assert not any(d.exists() for d in sl.dirs.values())


def test_create_replaces_an_empty_leftover_and_refuses_a_busy_one(
        v1: CgroupV1Driver, spawn: Spawn) -> None:
    first = v1.create(spec("twice"))
    second = v1.create(spec("twice"))  # the empty dirs of `first` are replaced
    p = spawn(second, "import time; print('up', flush=True); time.sleep(120)")
    assert p.stdout is not None and p.stdout.readline() == "up\n"
    with pytest.raises(SliceError, match="already exists"):
        v1.create(spec("twice"))
    assert isinstance(second, V1Slice)
    assert all(d.exists() for d in second.dirs.values())  # the failed create left it alone
    second.remove()
    assert p.wait(timeout=10) == -signal.SIGKILL
    first.remove()  # the same dirs, already gone


def test_join_failure_exits_97(v1: CgroupV1Driver, tmp_path: Path) -> None:
    """A cpuset cgroup without cpus refuses tasks (ENOSPC): the prefix exits 97 and never
    runs the command."""
    sl = v1.create(spec("nojoin"))
    assert isinstance(sl, V1Slice)
    empty = sl.dirs["cpuset"] / "empty"
    empty.mkdir()
    try:
        marker = tmp_path / "ran"
        prefix = [*sl.command_prefix[:4], str(empty / "cgroup.procs"), "--"]
        rc = subprocess.run([*prefix, "touch", str(marker)], timeout=10).returncode
        assert rc == EXIT_JOIN_FAILED
        assert not marker.exists()
    finally:
        os.rmdir(empty)
    sl.remove()


def test_gpu_slice_denies_the_other_gpus(v1: CgroupV1Driver, tmp_path: Path,
                                        spawn: Spawn) -> None:
    """Fake /dev/nvidia<N> nodes (no driver behind them): the assigned GPU opens as far as
    the missing driver (ENXIO); another is refused by the devices cgroup (EPERM)."""
    for n in (0, 1):
        os.mknod(tmp_path / f"nvidia{n}", 0o600 | 0o020000, os.makedev(195, n))
    sl = CgroupV1Driver(parent=v1.parent, dev_dir=tmp_path).create(spec("gpu", gpus=(0,)))
    try:
        assert sl.env["CUDA_VISIBLE_DEVICES"] == "0"
        code = f"""
import errno
for n in (0, 1):
    try:
        open("{tmp_path}/nvidia%d" % n, "rb")
    except OSError as e:
        print(n, errno.errorcode[e.errno])
"""
        p = spawn(sl, code)
        out, err = p.communicate(timeout=30)
        assert out.split("\n")[:2] == ["0 ENXIO", "1 EPERM"], (out, err)
    finally:
        sl.remove()


def test_join_prefix_runs_the_engine_argv(v1: CgroupV1Driver) -> None:
    sl = v1.create(spec("argv"))
    out = subprocess.run([*sl.command_prefix, sys.executable, "-c",
                          "import sys; print(sys.argv[1:])", "a b", "--", "$$"],
                         capture_output=True, text=True, timeout=30).stdout
    assert out.strip() == str(["a b", "--", "$$"])
    sl.remove()


def test_slices_made_at_once_from_threads_all_succeed(v1: CgroupV1Driver) -> None:
    """The supervisor makes slices from worker threads; a fresh parent dir is shared."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        slices = list(pool.map(lambda i: v1.create(spec(f"par{i}")), range(4)))
    try:
        assert sorted(s.info.path for s in slices) == [f"{v1.parent}/par{i}" for i in range(4)]
    finally:
        for s in slices:
            s.remove()
