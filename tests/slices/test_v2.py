"""The cgroup v2 driver against a temporary tree laid out like cgroup v2.

A real cgroupfs fills a new dir with interface files and lets rmdir remove a dir that
still shows them; `fake_cgroupfs` stands in for those two behaviours (empty files), so
the test can read back exactly what the driver wrote.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from server.slices import CgroupV2Driver, SliceError, SliceSpec, SliceUsage
from server.slices import v2 as v2mod
from server.slices.v2 import V2Slice

MiB = 1024**2
FILES = ("cgroup.controllers", "cgroup.subtree_control", "cgroup.procs", "cgroup.kill",
         "cgroup.events", "cpu.max", "cpu.stat", "memory.max", "memory.swap.max",
         "memory.current", "memory.peak", "memory.events", "pids.max", "cpuset.cpus",
         "cpuset.cpus.effective")
CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc"


class FakeFs:
    def __init__(self) -> None:
        self.removed: dict[Path, dict[str, str]] = {}  # dir -> its files' last contents

    def mkdir(self, path: Path) -> None:
        path.mkdir()
        for name in FILES:
            (path / name).touch()
        (path / "cgroup.controllers").write_text(CONTROLLERS + "\n")

    def rmdir(self, path: Path, timeout: float = 0) -> None:
        if not path.exists():
            return
        self.removed[path] = {f.name: f.read_text() for f in path.iterdir() if f.is_file()}
        for f in path.iterdir():
            f.unlink()
        path.rmdir()


@pytest.fixture
def fs(monkeypatch: pytest.MonkeyPatch) -> FakeFs:
    fake = FakeFs()
    monkeypatch.setattr(v2mod, "make_dir", fake.mkdir)
    monkeypatch.setattr(v2mod, "remove_dir", fake.rmdir)
    return fake


@pytest.fixture
def root(tmp_path: Path, fs: FakeFs) -> Path:
    r = tmp_path / "cgroup"
    fs.mkdir(r)
    (r / "cpuset.cpus.effective").write_text("0-3\n")
    return r


def spec(**kw: object) -> SliceSpec:
    values: dict = {"name": "chat", "cpus": 1, "memory_bytes": 256 * MiB, "pids_max": 64}
    values.update(kw)
    return SliceSpec(**values)


def read(path: Path) -> str:
    return path.read_text()


def test_exact_values_written(root: Path) -> None:
    sl = CgroupV2Driver(root, base="/").create(spec(cores=(0, 1)))
    d = root / "berth" / "chat"
    assert read(d / "cpu.max") == "100000 100000"
    assert read(d / "memory.max") == str(256 * MiB)
    assert read(d / "memory.swap.max") == "0"
    assert read(d / "pids.max") == "64"
    assert read(d / "cpuset.cpus") in ("0-1", "0,1")
    enabled = "+cpu +memory +pids +cpuset"
    assert read(root / "cgroup.subtree_control") == enabled
    assert read(root / "berth" / "cgroup.subtree_control") == enabled
    assert sl.info.path == "berth/chat" and sl.info.enforced and sl.info.driver == "cgroup-v2"
    assert sl.info.cpus == [0, 1] and sl.info.pids_limit == 64
    assert sl.env == {"OMP_NUM_THREADS": "1"}
    assert sl.command_prefix[3:] == ["berth-join", str(d / "cgroup.procs"), "--"]


def test_two_cpus_no_cores_and_gpus(root: Path) -> None:
    sl = CgroupV2Driver(root, base="/").create(spec(name="big", cpus=2, gpus=(1,)))
    d = root / "berth" / "big"
    assert read(d / "cpu.max") == "200000 100000"
    assert read(d / "cpuset.cpus") == ""  # not pinned: the parent's cpuset
    assert sl.info.cpus is None
    assert sl.env["CUDA_VISIBLE_DEVICES"] == "1"


def test_subtree_control_is_not_rewritten_when_enabled(root: Path) -> None:
    driver = CgroupV2Driver(root, base="/")
    driver.create(spec(name="a"))
    (root / "cgroup.subtree_control").write_text("cpuset cpu memory pids\n")  # as the kernel shows
    driver.create(spec(name="b"))
    assert read(root / "cgroup.subtree_control") == "cpuset cpu memory pids\n"


def test_prefix_writes_its_pid_then_execs(root: Path, tmp_path: Path) -> None:
    sl = CgroupV2Driver(root, base="/").create(spec())
    p = subprocess.run([*sl.command_prefix, "sh", "-c", "echo $$"], capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 0
    assert read(root / "berth" / "chat" / "cgroup.procs").strip() == p.stdout.strip()


def test_usage_is_parsed(root: Path) -> None:
    sl = CgroupV2Driver(root, base="/").create(spec())
    d = root / "berth" / "chat"
    (d / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    (d / "memory.current").write_text("1048576\n")
    (d / "memory.peak").write_text("2097152\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n")
    assert sl.usage() == SliceUsage(cpu_seconds=2.5, memory_bytes=1048576,
                                    memory_peak_bytes=2097152, oom_kills=1)
    (d / "memory.peak").unlink()  # older kernels: the highest reading seen
    (d / "memory.current").write_text("4096\n")
    usage = sl.usage()
    assert usage is not None and usage.memory_peak_bytes == 2097152


def test_remove_kills_then_rmdirs_and_is_idempotent(root: Path, fs: FakeFs) -> None:
    sl = CgroupV2Driver(root, base="/").create(spec())
    assert isinstance(sl, V2Slice)
    sl.remove()
    assert fs.removed[sl.dir]["cgroup.kill"] == "1"
    assert not sl.dir.exists()
    sl.remove()
    assert sl.usage() is None


def test_cleanup_stale(root: Path, fs: FakeFs) -> None:
    driver = CgroupV2Driver(root, base="/")
    driver.create(spec(name="old"))
    driver.create(spec(name="older"))
    assert CgroupV2Driver(root, base="/").cleanup_stale() == ["old", "older"]
    assert fs.removed[root / "berth" / "old"]["cgroup.kill"] == "1"
    assert not [p for p in (root / "berth").iterdir() if p.is_dir()]
    assert CgroupV2Driver(root, base="/").cleanup_stale() == []


def test_missing_controllers_explain_delegation(root: Path) -> None:
    (root / "cgroup.controllers").write_text("io pids\n")
    with pytest.raises(SliceError, match=r"does not offer cpu, memory.*Delegate=yes"):
        CgroupV2Driver(root, base="/").create(spec())


def test_cores_need_cpuset(root: Path) -> None:
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    with pytest.raises(SliceError, match="cpuset controller is not offered"):
        CgroupV2Driver(root, base="/").create(spec(cores=(0,)))


def test_cores_outside_the_parent_are_refused(root: Path, fs: FakeFs) -> None:
    driver = CgroupV2Driver(root, base="/")
    driver.create(spec(name="first"))
    (root / "berth" / "cpuset.cpus.effective").write_text("0-3\n")
    with pytest.raises(SliceError, match="outside the cpuset"):
        driver.create(spec(cores=(7,)))
    assert not (root / "berth" / "chat").exists()  # removed what it made


def busy_once(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """The kernel's answer to enabling controllers in a cgroup that holds processes."""
    real: Callable[[Path, str], None] = v2mod.write_file
    state = {"failed": False}

    def write_file(path: Path, value: str) -> None:
        if path == target and not state["failed"]:
            state["failed"] = True
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        real(path, value)

    monkeypatch.setattr(v2mod, "write_file", write_file)


def test_server_alone_in_its_cgroup_moves_into_a_leaf(
        root: Path, fs: FakeFs, monkeypatch: pytest.MonkeyPatch) -> None:
    own = root / "svc"
    fs.mkdir(own)
    (own / "cgroup.procs").write_text(f"{os.getpid()}\n")
    busy_once(monkeypatch, own / "cgroup.subtree_control")
    sl = CgroupV2Driver(root, base="/svc").create(spec())
    assert read(own / "berth.server" / "cgroup.procs") == str(os.getpid())
    assert read(own / "cgroup.subtree_control") == "+cpu +memory +pids +cpuset"
    assert sl.command_prefix[4] == str(own / "berth" / "chat" / "cgroup.procs")


def test_other_processes_in_the_servers_cgroup_explain_delegation(
        root: Path, fs: FakeFs, monkeypatch: pytest.MonkeyPatch) -> None:
    own = root / "svc"
    fs.mkdir(own)
    (own / "cgroup.procs").write_text(f"1\n{os.getpid()}\n")
    busy_once(monkeypatch, own / "cgroup.subtree_control")
    driver = CgroupV2Driver(root, base="/svc")
    with pytest.raises(SliceError, match=r"only leaf cgroups hold processes.*Delegate=yes"):
        driver.create(spec())
    assert not (own / "berth").exists()


def test_probe(root: Path, fs: FakeFs) -> None:
    assert CgroupV2Driver(root, base="/").probe() == (
        f"cgroup v2 (cpu, memory, pids, cpuset delegated at {root})")
    own = root / "svc"
    fs.mkdir(own)
    (own / "cgroup.procs").write_text("1\n")
    with pytest.raises(SliceError, match="holds 1 process"):
        CgroupV2Driver(root, base="/svc").probe()
    (own / "cgroup.subtree_control").write_text("cpu memory pids cpuset\n")  # delegated
    assert CgroupV2Driver(root, base="/svc").probe().startswith("cgroup v2 (")
    assert [p.name for p in own.iterdir() if p.is_dir()] == []  # the probe dir is gone
