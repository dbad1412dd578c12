"""How well the cgroup driver holds each CPU tier, and how soon a spawned engine is inside
its slice.

    .venv/bin/python bench/slices.py [--config config.toml] [--seconds 3] [--windows 3]
                                     [--driver auto|v1|v2]

For each tier of the config whose cpus fit this machine (and that has no GPU), starts a
spinner with as many threads as the machine has cores (sha256 over 1 MiB: the GIL is
released, so the threads really run in parallel) through the slice's join prefix, and
reads the slice's CPU use (cpuacct / cpu.stat) over a few windows. Target: used/allowed
0.95-1.05. A last row runs the same spinner with no slice: on a shared machine it shows
what the machine gives right now (a tier as big as the machine cannot beat it). Also
reports the time from spawn until /proc/<pid>/cgroup shows the slice in every hierarchy.
Needs root and writable cgroups; removes every cgroup it made.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.config import load_config  # noqa: E402
from server.slices import Slice, SliceSpec, choose_driver, node_cores  # noqa: E402

SPINNER = """
import hashlib, sys, threading, time
buf = b"x" * (1 << 20)
end = time.monotonic() + float(sys.argv[2])
def spin():
    while time.monotonic() < end:
        hashlib.sha256(buf).digest()
threads = [threading.Thread(target=spin) for _ in range(int(sys.argv[1]))]
for t in threads: t.start()
for t in threads: t.join()
"""


def wait_in_slice(pid: int, path: str, hierarchies: int, timeout: float = 5.0) -> float:
    """Poll /proc/<pid>/cgroup until `hierarchies` of its lines name the slice; returns the
    monotonic time that was first seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            lines = []
        if sum(line.endswith("/" + path) for line in lines) == hierarchies:
            return time.monotonic()
    raise TimeoutError(f"pid {pid} not in {path} after {timeout} s")


def spawn(prefix: list[str], env: dict[str, str], threads: int,
          seconds: float) -> subprocess.Popen[bytes]:
    argv = [*prefix, sys.executable, "-c", SPINNER, str(threads), str(seconds)]
    return subprocess.Popen(argv, env={**os.environ, **env})


def windows(read_cpu: Callable[[], float], count: int, seconds: float) -> list[float]:
    """CPUs used in each of `count` consecutive windows, after 0.5 s of start-up."""
    time.sleep(0.5)
    used = []
    c0, w0 = read_cpu(), time.monotonic()
    for _ in range(count):
        time.sleep(seconds)
        c1, w1 = read_cpu(), time.monotonic()
        used.append((c1 - c0) / (w1 - w0))
        c0, w0 = c1, w1
    return used


def run_tier(sl: Slice, threads: int, count: int, seconds: float) -> tuple[list[float], float]:
    """(CPUs used per window, spawn-to-inside-the-slice ms)."""
    assert sl.info.path is not None
    t0 = time.monotonic()
    p = spawn(sl.command_prefix, sl.env, threads, 1 + count * seconds)
    try:
        prefix = sl.command_prefix  # sh -c SCRIPT berth-join <procs file>... --
        t_in = wait_in_slice(p.pid, sl.info.path, prefix.index("--") - 4)

        def read_cpu() -> float:
            u = sl.usage()
            assert u is not None
            return u.cpu_seconds

        return windows(read_cpu, count, seconds), (t_in - t0) * 1e3
    finally:
        p.kill()  # by pid
        p.wait()


def run_unsliced(threads: int, count: int, seconds: float) -> list[float]:
    """The same spinner outside any slice: what the machine gives it right now."""
    p = spawn([], {}, threads, 1 + count * seconds)
    tick = os.sysconf("SC_CLK_TCK")

    def read_cpu() -> float:
        fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime + stime, all threads

    try:
        return windows(read_cpu, count, seconds)
    finally:
        p.kill()  # by pid
        p.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "config.toml"))
    ap.add_argument("--seconds", type=float, default=3.0, help="length of one window")
    ap.add_argument("--windows", type=int, default=3, help="windows per tier")
    ap.add_argument("--driver", default="auto", choices=["auto", "v1", "v2"])
    args = ap.parse_args()

    config = load_config(args.config)
    cores = node_cores()
    threads = len(cores)
    driver, reason = choose_driver(args.driver, parent=f"berth-bench-{os.getpid()}")
    print(f"driver: {reason}")
    print(f"node: {len(cores)} cores {cores}; spinner: {threads} threads; "
          f"{args.windows} windows of {args.seconds:g} s per row")
    if not driver.enforced:
        print("no cgroups here: nothing to measure")
        return 1
    tiers = [t for t in config.tiers.values() if t.gpus == 0 and t.cpus <= len(cores)]
    skipped = [t.name for t in config.tiers.values() if t not in tiers]
    rows: list[tuple[str, float, list[float], float | None]] = []
    try:
        for tier in tiers:
            spec = SliceSpec(name=f"bench-{tier.name}", cpus=tier.cpus,
                             memory_bytes=tier.memory_bytes, pids_max=256)
            sl = driver.create(spec)
            try:
                used, join_ms = run_tier(sl, threads, args.windows, args.seconds)
            finally:
                sl.remove()
            rows.append((tier.name, float(tier.cpus), used, join_ms))
    finally:
        driver.cleanup_stale()
        remove_parent = getattr(driver, "remove_parent", None)
        if remove_parent is not None:
            remove_parent()
    rows.append(("(none)", float(threads),
                 run_unsliced(threads, args.windows, args.seconds), None))

    print(f"\n{'tier':<8} {'allowed':>7} {'used (median)':>13} {'used (max)':>10} "
          f"{'ratio':>11} {'spawn->in slice':>15}")
    for name, allowed, per_window, joined_ms in rows:
        med, top = statistics.median(per_window), max(per_window)
        join = f"{joined_ms:.1f} ms" if joined_ms is not None else "-"
        print(f"{name:<8} {allowed:>7g} {med:>13.3f} {top:>10.3f} "
              f"{med / allowed:>5.3f}/{top / allowed:.3f} {join:>15}")
    print("ratio = used/allowed (median/max); target 0.95-1.05. (none): the same spinner "
          "with no slice, i.e. what the machine gives right now")
    if skipped:
        print(f"skipped (more cpus than this node, or GPUs): {', '.join(skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
