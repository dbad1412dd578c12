"""GPU memory readings: summed over the engine's real process tree, unknown (None) where
NVML cannot read. NVML needs an NVIDIA driver, absent here: a stand-in module plays it,
with the same calls and record fields as pynvml's."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from types import SimpleNamespace

import pytest

from server.config import Tier, config_from_dict
from server.gpu import GpuMemory, process_tree
from server.meter import Meter
from server.slices.base import Slice, SliceInfo
from server.store import Store
from server.usage import UsageMeter, process_reader


class FakeNvml:
    def __init__(self, procs: dict[int, list[tuple[int, int | None]]],
                 fail_init: bool = False) -> None:
        self.procs = procs  # device index -> [(pid, bytes)]
        self.fail_init = fail_init
        self.inits = self.shutdowns = 0

    def nvmlInit(self) -> None:
        self.inits += 1
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index not in self.procs:
            raise RuntimeError("Invalid Argument")
        return index

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in self.procs[handle]]


@pytest.fixture
def engine_tree():
    """A real process with a real child, like an engine and its worker."""
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(c.pid, flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    yield parent.pid, child
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signal.SIGKILL)
    parent.kill()
    parent.wait()
    parent.stdout.close()


def test_process_tree_finds_children(engine_tree) -> None:
    parent, child = engine_tree
    tree = process_tree(parent)
    assert {parent, child} <= tree
    assert process_tree(2**22 + 12345) == {2**22 + 12345}  # no such process: itself only


def test_memory_of_the_tree_on_its_own_gpus_only(engine_tree) -> None:
    parent, child = engine_tree
    nvml = FakeNvml({0: [(parent, 1000), (child, 500), (999_999, 7)],
                     1: [(child, 20)], 2: [(parent, 4000)]})
    gpu = GpuMemory(nvml)
    tree = process_tree(parent)
    assert gpu.used_by(tree, [0, 1]) == 1520  # not GPU 2, not the stranger's 7
    assert gpu.used_by(tree, [2]) == 4000
    assert gpu.used_by(tree, []) is None  # a CPU tier: no reading at all
    assert nvml.inits == 1
    gpu.close()
    assert nvml.shutdowns == 1


def test_unreadable_is_unknown_not_zero(engine_tree) -> None:
    parent, _ = engine_tree
    assert GpuMemory(FakeNvml({}, fail_init=True)).used_by({parent}, [0]) is None
    assert GpuMemory(FakeNvml({0: []})).used_by({parent}, [3]) is None  # device gone
    assert GpuMemory(FakeNvml({0: [(parent, None)]})).used_by({parent}, [0]) == 0


@dataclass
class StandIn:
    """The fields of a supervisor handle the meter reads."""

    id: int
    name: str
    slice: Slice
    pid: int = os.getpid()
    owner: str = "admin"
    tier: Tier = field(default_factory=lambda: Tier(
        name="gpu", cpus=1, memory_bytes=2**30, gpus=1, price_per_hour=Decimal("1.00")))
    spawned_at: float = time.time()
    usage: UsageMeter = field(default_factory=lambda: UsageMeter(
        process_reader(os.getpid()), "process"))


async def test_the_meter_records_gpu_memory_of_gpu_tiers(tmp_path) -> None:
    store = await Store.open(tmp_path / "berth.db")
    try:
        ids = [(await store.create_deployment(name=n, model="m", hardware="gpu",
                                              owner="admin", task=None, status="ready")).id
               for n in ("on-gpu", "on-cpu")]
        info = dict(driver="none", path=None, cpus=None, cpus_shared=False, cpu_quota=1.0,
                    memory_limit_bytes=2**30, pids_limit=None, enforced=False)
        on_gpu = StandIn(ids[0], "on-gpu", Slice(SliceInfo(**info, gpus=[1])))
        on_cpu = StandIn(ids[1], "on-cpu", Slice(SliceInfo(**info, gpus=[])))
        nvml = FakeNvml({0: [(os.getpid(), 111)], 1: [(os.getpid(), 3 * 2**20)]})
        supervisor = SimpleNamespace(all=lambda: [on_gpu, on_cpu], take_ended=list)
        meter = Meter(config_from_dict({"server": {"state_dir": str(tmp_path)}}), store,
                      supervisor, gpu=GpuMemory(nvml))  # type: ignore[arg-type]
        await meter.tick()
        assert (on_gpu.usage.gpu_memory_bytes, on_cpu.usage.gpu_memory_bytes) == (
            3 * 2**20, None)
        (gpu_row,) = await store.usage_buckets(ids[0], 1)
        (cpu_row,) = await store.usage_buckets(ids[1], 1)
        assert (gpu_row["gpu_samples"], gpu_row["gpu_memory_bytes_max"]) == (1, 3 * 2**20)
        assert cpu_row["gpu_samples"] == 0
        await meter.close()
        assert nvml.shutdowns == 1
    finally:
        await store.close()
