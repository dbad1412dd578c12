"""Usage history in the real SQLite store: rollups as samples arrive, retention, ranges."""

from __future__ import annotations

import pytest

from server.store import Store
from server.usage_history import point


@pytest.fixture
async def store(tmp_path):
    store = await Store.open(tmp_path / "berth.db")
    yield store
    await store.close()


async def _deployment(store: Store, name: str = "chat") -> int:
    row = await store.create_deployment(name=name, model="m", hardware="micro",
                                        owner="admin", task=None, status="pending")
    return row.id


def _sample(cpu: float, mem: int, requests: int = 0, prompt: int = 0, completion: int = 0,
            latency: float = 0.0, errors: int = 0, gpu: int | None = None) -> tuple:
    gpu_sums = (0, 0, 0) if gpu is None else (1, gpu, gpu)
    return (1, cpu, mem, mem, requests, errors, latency, prompt, completion, *gpu_sums)


async def test_each_second_rolls_up_into_its_minute_and_hour(store):
    dep = await _deployment(store)
    t0 = 1_700_000_040 - 1_700_000_040 % 60 + 40  # the samples cross into the next minute
    for i in range(30):
        await store.record_second(ends={}, requests=[], usage={
            (dep, t0 + i): _sample(10.0 + i, 1000 * (i + 1), requests=i % 2, prompt=3,
                                   completion=5, latency=2.0 * (i % 2))})
    seconds = await store.usage_buckets(dep, 1)
    minutes = await store.usage_buckets(dep, 60)
    hours = await store.usage_buckets(dep, 3600)
    assert [r["ts"] for r in seconds] == list(range(t0, t0 + 30))
    assert [(r["ts"], r["samples"]) for r in minutes] == [(t0 - 40, 20), (t0 + 20, 10)]
    assert len(hours) == 1 and hours[0]["samples"] == 30
    for rollup in (minutes, hours):
        assert sum(r["cpu_percent_sum"] for r in rollup) == sum(10.0 + i for i in range(30))
        assert sum(r["memory_bytes_sum"] for r in rollup) == sum(1000 * (i + 1)
                                                                   for i in range(30))
        assert sum(r["requests"] for r in rollup) == 15
        assert sum(r["prompt_tokens"] for r in rollup) == 90
    assert minutes[0]["memory_bytes_max"] == 20_000 and minutes[1]["memory_bytes_max"] == 30_000


async def test_two_readings_in_one_second_add_up(store):
    dep = await _deployment(store)
    for cpu in (20.0, 40.0):
        await store.record_second(ends={}, requests=[],
                                  usage={(dep, 1_700_000_000): _sample(cpu, 500)})
    (row,) = await store.usage_buckets(dep, 1)
    assert (row["samples"], row["cpu_percent_sum"]) == (2, 60.0)


async def test_series_from_seconds_minutes_and_a_range(store):
    dep = await _deployment(store)
    other = await _deployment(store, "other")
    t0 = 1_700_000_000 - 1_700_000_000 % 60
    for i in range(120):
        await store.record_second(ends={}, requests=[], usage={
            (dep, t0 + i): _sample(50.0, 100, requests=1, completion=2, latency=4.0),
            (other, t0 + i): _sample(1.0, 1)})
    by_10 = await store.usage_series(step=10, source_step=1, since_s=t0, until_s=t0 + 60,
                                     deployment_id=dep)
    assert [r["t"] for r in by_10] == [t0 + 10 * k for k in range(6)]
    assert all((r["samples"], r["requests"], r["completion_tokens"]) == (10, 10, 20)
               for r in by_10)
    by_minute = await store.usage_series(step=60, source_step=60, since_s=t0,
                                         until_s=t0 + 120, deployment_id=dep)
    assert [(r["t"], r["samples"], r["cpu_percent_sum"]) for r in by_minute] == [
        (t0, 60, 3000.0), (t0 + 60, 60, 3000.0)]
    both = await store.usage_series(step=60, source_step=60, since_s=t0, until_s=t0 + 60)
    assert [r["deployment"] for r in both] == ["chat", "other"]


async def test_prune_keeps_each_resolution_for_its_own_retention(store):
    dep = await _deployment(store)
    now = 1_700_000_000 - 1_700_000_000 % 3600
    for t in (now - 7200, now - 100, now - 5):
        await store.record_second(ends={}, requests=[], usage={(dep, t): _sample(1.0, 1)})
    await store.record_second(ends={}, usage={}, requests=[
        (dep, "chat", "admin", "/v1/completions", 200, "ok", (now - 90_000) * 1000, 1.0, 1.0,
         1, 1),
        (dep, "chat", "admin", "/v1/completions", 200, "ok", (now - 10) * 1000, 1.0, 1.0,
         1, 1)])
    await store.prune(now, keep_s={1: 60, 60: 3600, 3600: 86_400}, requests_keep_s=86_400)
    assert [r["ts"] for r in await store.usage_buckets(dep, 1)] == [now - 5]
    assert [r["ts"] for r in await store.usage_buckets(dep, 60)] == [now - 120, now - 60]
    assert len(await store.usage_buckets(dep, 3600)) == 2
    assert [r["started_ms"] for r in await store.request_rows()] == [(now - 10) * 1000]


async def test_gpu_memory_averages_over_the_seconds_that_had_a_reading(store):
    """A second without a GPU reading (NVML failed) does not drag the average to zero."""
    dep = await _deployment(store)
    t0 = 1_700_000_000 - 1_700_000_000 % 60
    for i, gpu in enumerate([4000, None, 8000, 6000]):
        await store.record_second(ends={}, requests=[],
                                  usage={(dep, t0 + i): _sample(1.0, 1, gpu=gpu)})
    (minute,) = await store.usage_series(step=60, source_step=60, since_s=t0,
                                         until_s=t0 + 60)
    assert (minute["samples"], minute["gpu_samples"]) == (4, 3)
    assert point(minute)["gpu_memory_bytes"] == 6000
    assert point(minute)["gpu_memory_max_bytes"] == 8000
    other = await _deployment(store, "cpu-only")
    await store.record_second(ends={}, requests=[], usage={(other, t0): _sample(1.0, 1)})
    (row,) = await store.usage_series(step=60, source_step=60, since_s=t0, until_s=t0 + 60,
                                      deployment_id=other)
    assert point(row)["gpu_memory_bytes"] is None  # unknown, not zero
