"""The join prefix and the small parsers both drivers share (no cgroups needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.slices import EXIT_JOIN_FAILED, SliceError, SliceSpec
from server.slices.common import check_spec, format_cpulist, join_prefix, parse_cpulist


def test_join_prefix_writes_its_pid_to_every_file_then_execs(tmp_path: Path) -> None:
    files = [tmp_path / "a", tmp_path / "b"]
    for f in files:
        f.touch()
    p = subprocess.run([*join_prefix(files), sys.executable, "-c",
                        "import os, sys; print(os.getpid(), sys.argv[1:])", "x y", "--"],
                       capture_output=True, text=True, timeout=10)
    pid, argv = p.stdout.split(" ", 1)
    assert p.returncode == 0, p.stderr
    assert [f.read_text().strip() for f in files] == [pid, pid]  # the same process, exec'd
    assert argv.strip() == str(["x y", "--"])


@pytest.mark.parametrize("target", ["missing-dir/cgroup.procs", "a-dir"])
def test_join_failure_exits_97_without_running_the_command(tmp_path: Path,
                                                           target: str) -> None:
    (tmp_path / "a-dir").mkdir()
    marker = tmp_path / "ran"
    p = subprocess.run([*join_prefix([tmp_path / target]), "touch", str(marker)],
                       capture_output=True, timeout=10)
    assert p.returncode == EXIT_JOIN_FAILED
    assert not marker.exists()


def test_join_prefix_without_a_command_fails(tmp_path: Path) -> None:
    (tmp_path / "procs").touch()
    assert subprocess.run(join_prefix([tmp_path / "procs"]), timeout=10).returncode == 97


def test_cpulists() -> None:
    assert parse_cpulist("0-2,5\n") == [0, 1, 2, 5]
    assert parse_cpulist("") == []
    assert format_cpulist([5, 0, 1, 2]) == "0-2,5"
    assert format_cpulist((3,)) == "3"


@pytest.mark.parametrize("bad", [
    {"cpus": 0}, {"memory_bytes": 0}, {"pids_max": 0}, {"name": "../x"}, {"cores": ()},
])
def test_bad_specs_are_refused(bad: dict) -> None:
    values: dict = {"name": "ok", "cpus": 1, "memory_bytes": 1 << 20, "pids_max": 8}
    values.update(bad)
    with pytest.raises(SliceError):
        check_spec(SliceSpec(**values))
