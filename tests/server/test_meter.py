"""The meter against a real Store: engines that came and went between two ticks are
billed for exactly their life, and a tick files its reading under the second it aimed at."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from dataclasses import dataclass, field
from decimal import Decimal

from server.accounting import Accounting, Record
from server.config import Tier, config_from_dict
from server.deployment import EngineLife
from server.meter import Meter
from server.slices import Slice, SliceInfo
from server.store import Store
from server.usage import UsageMeter, process_reader

TIER = Tier(name="micro", cpus=1, memory_bytes=2**30, gpus=0, price_per_hour=Decimal("0.036"))


@dataclass(eq=False)
class Handle:
    """The fields of a supervisor handle the meter reads."""

    id: int
    name: str = "chat"
    owner: str = "admin"
    tier: Tier = TIER
    pid: int | None = None
    spawned_at: float | None = None
    slice: Slice | None = None
    usage: UsageMeter | None = None


@dataclass
class Supervisor:
    handles: list[Handle]
    ended: list[EngineLife] = field(default_factory=list)

    def all(self) -> list[Handle]:
        return self.handles

    def take_ended(self) -> list[EngineLife]:
        ended, self.ended = self.ended, []
        return ended

    def spawn(self, dep: Handle, pid: int, at: float) -> None:
        dep.pid, dep.spawned_at = pid, at

    def reap(self, dep: Handle, at: float) -> None:
        assert dep.pid is not None and dep.spawned_at is not None
        self.ended.append(EngineLife(dep, dep.pid, dep.spawned_at, at))  # type: ignore[arg-type]
        dep.pid = None


async def _setup(tmp_path) -> tuple[Store, Handle, Supervisor, Meter]:
    store = await Store.open(tmp_path / "berth.db")
    row = await store.create_deployment(name="chat", model="m", hardware="micro",
                                        owner="admin", task=None, status="ready")
    dep = Handle(row.id)
    supervisor = Supervisor([dep])
    meter = Meter(config_from_dict({"server": {"state_dir": str(tmp_path)}}), store,
                  supervisor)  # type: ignore[arg-type]
    return store, dep, supervisor, meter


async def _rows(store: Store) -> list[tuple[int, int, int]]:
    return [(r["start_ms"], r["end_ms"], r["rate_micros_per_hour"])
            for r in await store.billing_rows()]


async def test_an_engine_that_lived_between_two_ticks_is_billed_its_life(tmp_path) -> None:
    store, dep, supervisor, meter = await _setup(tmp_path)
    try:
        await meter.tick()
        assert await _rows(store) == []
        now = time.time()
        supervisor.spawn(dep, 4242, now - 0.5)
        supervisor.reap(dep, now - 0.2)  # 300 ms of life, no tick saw it running
        await meter.tick()
        assert await _rows(store) == [(int((now - 0.5) * 1000), int((now - 0.2) * 1000),
                                       36_000)]
        await meter.tick()  # nothing more: it is gone
        assert len(await _rows(store)) == 1
    finally:
        await store.close()


async def test_lives_between_ticks_each_get_their_own_interval_none_overlapping(
        tmp_path) -> None:
    store, dep, supervisor, meter = await _setup(tmp_path)
    try:
        t = time.time()
        supervisor.spawn(dep, 100, t - 0.5)
        await meter.tick()  # seen running: an open interval
        await asyncio.sleep(0.6)  # then, before the next tick, a crash loop faster than the meter:
        supervisor.reap(dep, t + 0.1)
        supervisor.spawn(dep, 101, t + 0.2)
        supervisor.reap(dep, t + 0.4)
        supervisor.spawn(dep, 102, t + 0.5)  # running at the tick
        await meter.tick()
        rows = await _rows(store)
        ms = [(int((t + a) * 1000), int((t + b) * 1000)) for a, b in ((-0.5, 0.1), (0.2, 0.4))]
        assert [(s, e) for s, e, _ in rows[:2]] == ms
        assert rows[2][0] == int((t + 0.5) * 1000) and rows[2][1] >= int((t + 0.6) * 1000)
        for (_, end, _), (start, _, _) in itertools.pairwise(rows):
            assert start >= end
    finally:
        await store.close()


async def test_a_tick_files_its_reading_under_the_second_it_aimed_at(tmp_path) -> None:
    store, dep, supervisor, meter = await _setup(tmp_path)
    try:
        supervisor.spawn(dep, os.getpid(), time.time())
        dep.usage = UsageMeter(process_reader(os.getpid()), "process")
        dep.slice = Slice(SliceInfo(driver="none", path=None, cpus=None, cpus_shared=False,
                                    cpu_quota=1.0, memory_limit_bytes=2**30,
                                    pids_limit=None, enforced=False, gpus=[]))
        aimed = int(time.time()) + 5  # as a timer that woke a hair before that second
        await meter.tick(aimed)
        await meter.tick(aimed + 1)
        buckets = await store.usage_buckets(dep.id, 1)
        assert [b["ts"] for b in buckets] == [aimed, aimed + 1]
        assert [b["samples"] for b in buckets] == [1, 1]
    finally:
        await store.close()


async def test_requests_refused_before_the_engine_make_no_usage_bucket(tmp_path) -> None:
    store, dep, supervisor, _ = await _setup(tmp_path)
    try:
        accounting = Accounting()
        meter = Meter(config_from_dict({"server": {"state_dir": str(tmp_path)}}), store,
                      supervisor, accounting)  # type: ignore[arg-type]
        now = time.time()
        for outcome, status in (("rejected", 503), ("ok", 200), ("error", 502)):
            rec = Record("/v1/completions", deployment="chat", deployment_id=dep.id,
                         owner="admin", started=now)
            rec.finish(status, outcome)
            accounting.add(rec)
        await meter.tick()
        (bucket,) = await store.usage_buckets(dep.id, 1)
        assert (bucket["samples"], bucket["requests"], bucket["errors"]) == (0, 2, 1)
        assert [r["outcome"] for r in await store.request_rows()] == ["rejected", "ok", "error"]

        rec = Record("/v1/completions", deployment="chat", deployment_id=dep.id,
                     owner="admin", started=now + 10)  # stopped: nothing but refusals
        rec.finish(503, "rejected")
        accounting.add(rec)
        await meter.tick()
        assert len(await store.usage_buckets(dep.id, 1)) == 1  # no bucket for it
        assert len(await store.request_rows()) == 4  # still recorded
    finally:
        await store.close()
