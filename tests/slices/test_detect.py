"""choose_driver, node_cores, node_memory_bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.slices import (
    CgroupV1Driver,
    NoneDriver,
    SliceError,
    choose_driver,
    node_cores,
    node_memory_bytes,
)
from server.slices import detect as detect_mod

from .conftest import TEST_PARENT


def test_none_when_asked() -> None:
    driver, reason = choose_driver("none")
    assert isinstance(driver, NoneDriver) and not driver.enforced
    assert reason.startswith("none:") and "NOT enforced" in reason


def test_auto_on_a_root_with_no_cgroups_is_none(tmp_path: Path) -> None:
    driver, reason = choose_driver("auto", root=tmp_path)
    assert isinstance(driver, NoneDriver)
    assert reason.startswith("none:") and reason.endswith("limits are NOT enforced")
    assert "\n" not in reason


def test_auto_on_plain_dirs_that_look_like_cgroups_is_none(tmp_path: Path) -> None:
    """Writable, but not a cgroup filesystem: a new dir gets no cgroup.procs."""
    for c in ("cpu", "cpuacct", "cpuset", "memory", "pids"):
        (tmp_path / c).mkdir()
        (tmp_path / c / "cgroup.procs").touch()
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "cgroup.subtree_control").touch()
    driver, reason = choose_driver("auto", root=tmp_path)
    assert isinstance(driver, NoneDriver)
    assert "not a cgroup filesystem" in reason


def test_explicit_drivers_that_cannot_work_raise(tmp_path: Path) -> None:
    with pytest.raises(SliceError, match="no cpuset hierarchy"):
        choose_driver("v1", root=tmp_path)
    with pytest.raises(SliceError, match="no cgroup v2"):
        choose_driver("v2", root=tmp_path)
    with pytest.raises(ValueError, match="expected one of auto, v1, v2, none"):
        choose_driver("v3")


@pytest.mark.cgroups
def test_v1_here_and_auto_picks_it() -> None:
    try:
        driver, reason = choose_driver("v1", parent=TEST_PARENT)
    except SliceError as e:
        pytest.skip(f"needs writable cgroup v1 hierarchies: {e}")
    assert isinstance(driver, CgroupV1Driver)
    assert reason == "cgroup v1 (cpu, cpuacct, cpuset, memory, pids writable)"
    auto, auto_reason = choose_driver("auto", parent=TEST_PARENT)
    if not Path("/sys/fs/cgroup/cgroup.controllers").exists():  # not a v2-only machine
        assert isinstance(auto, CgroupV1Driver) and auto_reason == reason


@pytest.mark.cgroups
def test_not_root_is_none_with_a_reason() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to an unprivileged user")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child drops to `nobody` and reports; it never returns to pytest
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            os.write(w, choose_driver("auto", parent=TEST_PARENT)[1].encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        reason = f.read()
    os.waitpid(pid, 0)
    assert reason.startswith("none:") and "(not root?)" in reason, reason
    assert reason.endswith("limits are NOT enforced")


def test_node_cores_is_the_affinity() -> None:
    assert node_cores() == sorted(os.sched_getaffinity(0))


def test_node_memory_bytes_is_memtotal_or_a_lower_cgroup_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    total = node_memory_bytes()
    assert 0 < total <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

    monkeypatch.setattr(detect_mod, "own_cgroups", lambda: {"memory": "/a/b", "": "/"})
    (tmp_path / "memory" / "a" / "b").mkdir(parents=True)
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (tmp_path / "memory" / "a" / "memory.limit_in_bytes").write_text(f"{3 * 1024**3}\n")
    (tmp_path / "memory" / "a" / "b" / "memory.limit_in_bytes").write_text(f"{5 * 1024**3}\n")
    assert node_memory_bytes(tmp_path) == min(total, 3 * 1024**3)

    monkeypatch.setattr(detect_mod, "own_cgroups", lambda: {"": "/svc"})
    (tmp_path / "svc").mkdir()
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "svc" / "memory.max").write_text(f"{1024**3}\n")
    assert node_memory_bytes(tmp_path) == 1024**3
