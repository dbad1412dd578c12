"""What the 1 Hz meter costs with many deployments: CPU of one core, tick time, DB growth.

    .venv/bin/python bench/meter.py [--deployments 10,100,300] [--seconds 15]

For each count, a real SQLite store in a temp dir holds that many deployments, each with a
running "engine" whose slice is a stand-in: its reader opens and parses a real /proc file
(this process's stat and statm, what a cgroup counter read costs) and every deployment
gets a few requests a second through the real accounting. The real `server.meter.Meter`
then ticks on the second for `--seconds`; the table gives the meter's CPU as a share of
one core (process CPU time over wall time, minus an idle baseline measured the same way in
the same run), the tick duration, and the rows and bytes it wrote. Target: under 2% of one
core at 100 deployments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.accounting import Accounting, Record  # noqa: E402
from server.config import Tier, config_from_dict  # noqa: E402
from server.meter import Meter  # noqa: E402
from server.store import Store  # noqa: E402
from server.usage import UsageMeter, process_reader  # noqa: E402

TIER = Tier(name="micro", cpus=1, memory_bytes=2 * 1024**3, gpus=0,
            price_per_hour=Decimal("0.033"))


@dataclass
class StandInDeployment:
    """The fields of a supervisor handle the meter reads."""

    id: int
    name: str
    owner: str = "admin"
    tier: Tier = TIER
    pid: int | None = None
    spawned_at: float | None = None
    usage: UsageMeter | None = None
    slice: Any = None  # none: no GPU reading


@dataclass
class StandInSupervisor:
    deployments: list[StandInDeployment] = field(default_factory=list)

    def all(self) -> list[StandInDeployment]:
        return list(self.deployments)

    def take_ended(self) -> list[Any]:
        return []  # the stand-ins run for the whole measurement


async def _requests(accounting: Accounting, deps: list[StandInDeployment],
                    per_second: int, until: float) -> None:
    """`per_second` finished request records per deployment per second."""
    rng = random.Random(7)
    while time.monotonic() < until:
        for dep in deps:
            for _ in range(per_second):
                rec = Record(route="/v1/chat/completions", deployment=dep.name,
                             deployment_id=dep.id, owner=dep.owner)
                rec.first_byte()
                rec.finish(200, "ok")
                rec.prompt_tokens, rec.completion_tokens = rng.randint(5, 50), 16
                accounting.add(rec)
        await asyncio.sleep(1.0)


def _cpu() -> float:
    return time.process_time()


async def _idle_baseline(seconds: float) -> float:
    """CPU share of one core this process uses doing nothing but its event loop."""
    wall0, cpu0 = time.monotonic(), _cpu()
    await asyncio.sleep(seconds)
    return (_cpu() - cpu0) / (time.monotonic() - wall0)


async def run(count: int, seconds: float, per_second: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="berth-bench-meter-") as tmp:
        db_path = Path(tmp) / "berth.db"
        store = await Store.open(db_path)
        config = config_from_dict({"server": {"state_dir": tmp}})
        supervisor = StandInSupervisor()
        for i in range(count):
            row = await store.create_deployment(name=f"dep-{i:04d}", model="m",
                                                hardware="micro", owner="admin", task=None,
                                                status="ready")
            dep = StandInDeployment(id=row.id, name=row.name, pid=100_000 + i,
                                    spawned_at=time.time(),
                                    usage=UsageMeter(process_reader(os.getpid()), "stand-in"))
            supervisor.deployments.append(dep)
        accounting = Accounting()
        meter = Meter(config, store, supervisor, accounting)  # type: ignore[arg-type]
        ticks: list[float] = []
        original_tick = meter.tick

        async def timed_tick(second: int | None = None) -> None:
            t0 = time.perf_counter()
            await original_tick(second)
            ticks.append(time.perf_counter() - t0)

        meter.tick = timed_tick  # type: ignore[method-assign]
        size0 = await _db_bytes(store)
        until = time.monotonic() + seconds
        feeder = asyncio.create_task(_requests(accounting, supervisor.deployments, per_second,
                                               until))
        wall0, cpu0 = time.monotonic(), _cpu()
        meter.start()
        await asyncio.sleep(seconds)
        cpu_share = (_cpu() - cpu0) / (time.monotonic() - wall0)
        await meter.close()
        await feeder
        rows = {}
        for table in ("usage", "requests", "billing"):
            async with store._db.execute(f"SELECT COUNT(*) FROM {table}") as cur:
                rows[table] = (await cur.fetchone())[0]
        growth = await _db_bytes(store) - size0
        await store.close()
        return {"count": count, "cpu_share": cpu_share, "ticks": ticks, "rows": rows,
                "db_growth": growth}


async def _db_bytes(store: Store) -> int:
    """The database's size in pages (the WAL file's size moves with checkpoints)."""
    async with store._db.execute("PRAGMA page_count") as cur:
        pages = (await cur.fetchone())[0]
    async with store._db.execute("PRAGMA page_size") as cur:
        return int(pages * (await cur.fetchone())[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", default="10,100,300",
                        help="comma-separated deployment counts (default 10,100,300)")
    parser.add_argument("--seconds", type=float, default=15.0, help="meter run per count")
    parser.add_argument("--requests", type=int, default=2,
                        help="requests per deployment per second (default 2)")
    args = parser.parse_args()
    counts = [int(c) for c in args.deployments.split(",")]

    async def all_runs() -> tuple[float, list[dict[str, Any]]]:
        baseline = await _idle_baseline(min(args.seconds, 5.0))
        return baseline, [await run(c, args.seconds, args.requests) for c in counts]

    baseline, results = asyncio.run(all_runs())
    print(f"meter over {args.seconds:g} s per row, {args.requests} requests/deployment/s; "
          f"idle event loop baseline {100 * baseline:.2f}% of one core (subtracted)")
    print(f"{'deployments':>11} {'cpu % core':>10} {'target':>7} {'tick p50 ms':>11} "
          f"{'tick max ms':>11} {'usage rows':>10} {'request rows':>12} {'db growth KiB/s':>15}")
    for r in results:
        share = max(0.0, r["cpu_share"] - baseline) * 100
        ticks = r["ticks"] or [0.0]
        target = "-" if r["count"] > 100 else ("ok" if share < 2.0 else "MISSED")
        print(f"{r['count']:>11} {share:>10.2f} {target:>7} "
              f"{1000 * statistics.median(ticks):>11.2f} {1000 * max(ticks):>11.2f} "
              f"{r['rows']['usage']:>10} {r['rows']['requests']:>12} "
              f"{r['db_growth'] / 1024 / args.seconds:>15.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
