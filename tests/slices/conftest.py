"""Fixtures for the slice drivers: a real v1 driver under a per-run parent dir (skipped
where cgroup v1 is not writable) and a spawner that reaps what it started."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server.slices import CgroupV1Driver, Slice, SliceError, choose_driver
from server.slices.v1 import CONTROLLERS, GPU_CONTROLLERS

TEST_PARENT = f"berth-test-{os.getpid()}"

Spawn = Callable[[Slice, str], subprocess.Popen[str]]


def parent_dirs(driver: CgroupV1Driver) -> list[Path]:
    bases = driver.bases(CONTROLLERS + GPU_CONTROLLERS)
    return [base / driver.parent for base in dict.fromkeys(bases.values())]


@pytest.fixture
def v1() -> Iterator[CgroupV1Driver]:
    try:
        driver, _reason = choose_driver("v1", parent=TEST_PARENT)
    except SliceError as e:
        pytest.skip(f"needs writable cgroup v1 hierarchies: {e}")
    assert isinstance(driver, CgroupV1Driver)
    try:
        yield driver
    finally:
        driver.cleanup_stale()  # kills (by pid) what a failed test left inside
        driver.remove_parent()
        left = [str(p) for p in parent_dirs(driver) if p.exists()]
        assert not left, f"cgroups left behind: {left}"


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """spawn(slice, python_code) runs `python -c code` through the slice's prefix."""
    procs: list[subprocess.Popen[str]] = []

    def start(sl: Slice, code: str) -> subprocess.Popen[str]:
        argv = [*sl.command_prefix, sys.executable, "-c", code]
        p = subprocess.Popen(argv, env={**os.environ, **sl.env}, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()  # by pid
        p.communicate(timeout=10)
