"""The meter: once a second, every engine that is alive and holds its slice is billed,
its slice is read, and the second's usage and requests are written, in one transaction.

Billing: one row per engine process lifetime (`billing`), opened at its spawn time, its
end moved to "now" every second and set to its exit time once it is reaped. A server
killed with SIGKILL loses at most the last second; a row is never reopened, and a new one
never starts before the last one of its deployment ended, so no second is billed twice.
Stopped, failed, backing-off and deleted deployments have no engine: nothing is billed.

Usage: each reading (CPU % over the last second, memory, GPU memory on GPU tiers) is
added to its 1 s, 1 min and 1 h buckets (`usage`), together with the requests that
started in that second; buckets older than `[metering]` retention are pruned once a
minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from server.accounting import Accounting, Record
from server.config import Config
from server.deployment import Deployment
from server.gpu import GpuMemory, process_tree
from server.money import rate_micros
from server.store import Store, UsageSums
from server.supervisor import Supervisor

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 60


def _ms(t: float) -> int:
    return int(t * 1000)


@dataclass
class _Open:
    interval: int
    pid: int
    dep: Deployment


class Meter:
    def __init__(self, config: Config, store: Store, supervisor: Supervisor,
                 accounting: Accounting | None = None, gpu: GpuMemory | None = None) -> None:
        self.config = config
        self.gpu = gpu or GpuMemory()
        self.accounting = accounting
        self.store = store
        self.supervisor = supervisor
        self._open: dict[int, _Open] = {}  # deployment id -> its open interval
        self._task: asyncio.Task[None] | None = None
        self._pruned_at = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="meter")

    async def close(self) -> None:
        """Stop ticking; one last tick closes what the shutdown ended."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.tick()
        self.gpu.close()

    async def _run(self) -> None:
        second = int(time.time())
        while True:
            # aim at the next whole second; a late wake (a busy loop) skips the seconds it
            # missed instead of reading one second twice
            second = max(second + 1, int(time.time()) + 1)
            await asyncio.sleep(max(0.0, second - time.time()))
            try:
                await self.tick(second)
                if time.time() - self._pruned_at >= PRUNE_EVERY_S:
                    await self.prune()
            except Exception:  # a failed tick must not stop the meter
                log.exception("meter tick failed")

    async def tick(self, second: int | None = None) -> None:
        """One reading, labelled `second` (the second the tick aimed at: a timer that
        wakes a hair early still files it under the right one)."""
        now_s = time.time()
        ends = await self._bill(_ms(now_s))
        usage = self._read_slices(int(now_s) if second is None else second)
        records = self.accounting.take() if self.accounting is not None else []
        _add_requests(usage, records)
        await self.store.record_second(ends=ends, usage=usage,
                                       requests=[r.row() for r in records])

    async def prune(self) -> None:
        m = self.config.metering
        self._pruned_at = time.time()
        await self.store.prune(int(self._pruned_at), keep_s={
            1: m.second_retention_s, 60: m.minute_retention_s, 3600: m.hour_retention_s},
            requests_keep_s=m.request_retention_s)

    async def _bill(self, now: int) -> dict[int, int]:
        """{interval id: new end ms}: engines reaped since the last tick closed at their
        exit (one that lived between two ticks gets its own interval), running ones
        opened at their spawn and extended to now."""
        ends: dict[int, int] = {}
        for life in self.supervisor.take_ended():
            current = self._open.get(life.dep.id)
            if current is not None and current.pid == life.pid:
                del self._open[life.dep.id]
                interval = current.interval
            else:  # spawned and reaped between two ticks: never seen running
                interval = await self._open_interval(life.dep, life.pid, life.spawned_at)
            ends[interval] = min(now, _ms(life.exited_at))
        for dep_id, current in list(self._open.items()):
            if current.dep.pid != current.pid:  # gone without a word: close it now
                ends[current.interval] = now
                del self._open[dep_id]
        for dep in self.supervisor.all():
            if dep.pid is None or dep.spawned_at is None:
                continue
            opened = self._open.get(dep.id)
            if opened is None:
                interval = await self._open_interval(dep, dep.pid, dep.spawned_at)
                opened = self._open[dep.id] = _Open(interval, dep.pid, dep)
            ends[opened.interval] = now
        return ends

    async def _open_interval(self, dep: Deployment, pid: int, spawned_at: float) -> int:
        return await self.store.open_interval(
            deployment_id=dep.id, deployment=dep.name, owner=dep.owner,
            hardware=dep.tier.name, pid=pid,
            rate_micros_per_hour=rate_micros(dep.tier.price_per_hour),
            currency=self.config.currency, start_ms=_ms(spawned_at))

    def _read_slices(self, second: int) -> dict[tuple[int, int], UsageSums]:
        """One reading of every running engine's slice (the deployment JSON's live
        `usage` is this reading too)."""
        usage: dict[tuple[int, int], UsageSums] = {}
        for dep in self.supervisor.all():
            meter = dep.usage
            if dep.pid is None or meter is None or not meter.sample():
                continue
            gpus = dep.slice.info.gpus if dep.slice else []
            gpu = self.gpu.used_by(process_tree(dep.pid), gpus) if gpus else None
            meter.gpu_memory_bytes = gpu
            usage[dep.id, second] = (1, meter.cpu_percent, meter.memory_bytes,
                                     meter.memory_bytes, 0, 0, 0.0, 0, 0,
                                     *((1, gpu, gpu) if gpu is not None else (0, 0, 0)))
        return usage


def _add_requests(usage: dict[tuple[int, int], UsageSums], records: Iterable[Record]) -> None:
    """Counts each request that reached the engine in the second it started, beside
    that second's reading (a refused one is in the request log and /metrics only: it
    must not make a bucket for a deployment that was not running)."""
    for r in records:
        if r.deployment_id is None or r.outcome == "rejected":
            continue
        key = (r.deployment_id, int(r.started))
        (n, cpu, mem, mem_max, requests, errors, latency, prompt, completion,
         *gpu) = usage.get(key, (0, 0.0, 0, 0, 0, 0, 0.0, 0, 0, 0, 0, 0))
        usage[key] = (n, cpu, mem, mem_max, requests + 1,
                      errors + (r.outcome != "ok"), latency + (r.latency_ms or 0.0),
                      prompt + (r.prompt_tokens or 0), completion + (r.completion_tokens or 0),
                      gpu[0], gpu[1], gpu[2])
