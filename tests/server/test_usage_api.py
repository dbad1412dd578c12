"""GET /api/usage against a real engine: per-second readings, rollups, requests, errors."""

from __future__ import annotations

import asyncio
import time

from tests.server.conftest import supervisor_of, wait_for

CHAT = "berth-demo/tiny-random-llama-chat"


async def test_usage_series_of_a_running_deployment(make_client, tiny_models):
    api = await make_client(deployments=[{"name": "chat", "model": CHAT, "hardware": "micro"}],
                            models_dir=tiny_models.models_dir)
    dep = supervisor_of(api).get("chat")
    assert dep is not None
    await wait_for(lambda: dep.ready, 120)
    since = int(time.time()) - 1
    completion_tokens = 0
    for _ in range(3):
        resp = await api.post("/v1/completions", json={
            "model": "chat", "prompt": "ships", "max_tokens": 4})
        assert resp.status == 200
        completion_tokens += (await resp.json())["usage"]["completion_tokens"]
    await asyncio.sleep(3.5)  # the meter writes each second
    until = int(time.time()) + 1

    resp = await api.get("/api/usage", params={"deployment": "chat", "step": "1",
                                               "since": str(since), "until": str(until)})
    assert resp.status == 200
    body = await resp.json()
    assert (body["deployment"], body["step"], body["since"]) == ("chat", 1, since)
    points = body["data"]
    assert len(points) >= 3
    assert [p["t"] for p in points] == sorted({p["t"] for p in points})
    readings = [p for p in points if p["samples"]]
    assert readings and all(p["memory_bytes"] > 10 * 2**20 for p in readings)
    assert all(isinstance(p["cpu_percent"], float | int) and p["cpu_percent"] >= 0
               for p in readings)
    assert sum(p["requests"] for p in points) == 3
    assert sum(p["completion_tokens"] for p in points) == completion_tokens
    assert all(p["latency_ms_avg"] > 0 for p in points if p["requests"])

    # The same seconds, summed by the minute rollups: the same totals.
    resp = await api.get("/api/usage", params={"deployment": "chat", "step": "1m",
                                               "since": str(since), "until": str(until)})
    minutes = (await resp.json())["data"]
    assert 1 <= len(minutes) <= 2
    window = [p for p in points if minutes[0]["t"] <= p["t"]]
    assert sum(p["requests"] for p in minutes) == 3
    assert sum(p["samples"] for p in minutes) >= sum(p["samples"] for p in window)

    # Without a step the range picks one; without a deployment every one is listed.
    resp = await api.get("/api/usage")
    assert resp.status == 200
    assert {p["deployment"] for p in (await resp.json())["data"]} == {"chat"}


async def test_usage_refuses_bad_queries(make_client):
    api = await make_client()
    for params, status, param in [
        ({"step": "abc"}, 400, "step"),
        ({"step": "0"}, 400, "step"),
        ({"step": "-5"}, 400, "step"),
        ({"since": "yesterday"}, 400, "since"),
        ({"since": "2000", "until": "1000"}, 400, "until"),
        ({"since": "0", "step": "1"}, 400, "step"),  # far too many points
        ({"deployment": "nobody"}, 404, "deployment"),
    ]:
        resp = await api.get("/api/usage", params=params)
        assert resp.status == status, params
        assert (await resp.json())["error"]["param"] == param, params
