"""The meter: once a second, every engine that is alive and holds its slice is billed.

One row per engine process lifetime (`billing`): opened at its spawn time, its end moved
to "now" every second in one transaction, and set to its exit time once it is reaped.
A server killed with SIGKILL loses at most the last second; a row is never reopened, and
a new one never starts before the last one of its deployment ended, so no second is
billed twice. Stopped, failed, backing-off and deleted deployments have no engine, so
nothing is billed for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from server.accounting import Accounting
from server.config import Config
from server.money import rate_micros
from server.store import Store
from server.supervisor import Deployment, Supervisor

log = logging.getLogger(__name__)


def _ms(t: float) -> int:
    return int(t * 1000)


@dataclass
class _Open:
    interval: int
    pid: int
    dep: Deployment


class Meter:
    def __init__(self, config: Config, store: Store, supervisor: Supervisor,
                 accounting: Accounting | None = None) -> None:
        self.config = config
        self.accounting = accounting
        self.store = store
        self.supervisor = supervisor
        self._open: dict[int, _Open] = {}  # deployment id -> its open interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="meter")

    async def close(self) -> None:
        """Stop ticking; one last tick closes what the shutdown ended."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.tick()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(1.0 - (time.time() % 1.0))  # on the second
            try:
                await self.tick()
            except Exception:  # a failed tick must not stop the meter
                log.exception("meter tick failed")

    async def tick(self) -> None:
        now = _ms(time.time())
        ends: dict[int, int] = {}
        for dep_id, current in list(self._open.items()):
            dep = current.dep
            if dep.pid != current.pid:  # that engine is gone (and maybe another runs)
                ended = dep.exited_at if dep.exited_at is not None else now / 1000
                ends[current.interval] = min(now, _ms(ended))
                del self._open[dep_id]
        for dep in self.supervisor.all():
            if dep.pid is None or dep.spawned_at is None:
                continue
            opened = self._open.get(dep.id)
            if opened is None:
                tier = dep.tier
                interval = await self.store.open_interval(
                    deployment_id=dep.id, deployment=dep.name, owner=dep.owner,
                    hardware=tier.name, pid=dep.pid,
                    rate_micros_per_hour=rate_micros(tier.price_per_hour),
                    currency=self.config.currency, start_ms=_ms(dep.spawned_at))
                opened = self._open[dep.id] = _Open(interval, dep.pid, dep)
            ends[opened.interval] = now
        await self.store.extend_intervals(ends)
        if self.accounting is not None:  # the requests of the last second, in one write
            await self.store.insert_requests([r.row() for r in self.accounting.take()])
