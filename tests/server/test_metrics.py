"""GET /metrics: Prometheus text for every deployment, admin only."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from server.states import State
from tests.helpers import AUTH
from tests.server.conftest import supervisor_of, wait_for

CHAT = "berth-demo/tiny-random-llama-chat"
GIB = 2**30


async def scrape(api) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} of one scrape."""
    resp = await api.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(await resp.text())
            for s in family.samples}


def labels(**extra: str) -> frozenset[tuple[str, str]]:
    return frozenset({"deployment": "chat", "owner": "admin", "hardware": "micro",
                      **extra}.items())


async def test_metrics_per_deployment(make_client, tiny_models):
    api = await make_client(deployments=[{"name": "chat", "model": CHAT, "hardware": "micro"}],
                            models_dir=tiny_models.models_dir)
    dep = supervisor_of(api).get("chat")
    assert dep is not None
    await wait_for(lambda: dep.ready and dep.usage is not None and dep.usage.memory_bytes > 0,
                   120)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (m := await scrape(api))[
            "berth_deployment_billed_seconds_total", labels()] <= 0:
        assert loop.time() < deadline, "nothing billed in 10 s"
        await asyncio.sleep(0.2)
    for state in State:
        assert m["berth_deployment_state", labels(state=str(state))] == (state is State.READY)
    assert m["berth_deployment_memory_limit_bytes", labels()] == 2 * GIB
    assert m["berth_deployment_memory_bytes", labels()] > 0
    assert m["berth_deployment_cpu_seconds_total", labels()] >= 0
    assert m["berth_deployment_cpu_percent", labels()] >= 0
    assert m["berth_deployment_restarts_total", labels()] == 0
    assert m["berth_deployment_oom_kills_total", labels()] == 0
    assert m["berth_deployment_cost_total", labels(currency=dep.currency)] > 0
    assert m["berth_deployment_requests_active", labels()] == 0
    assert m["berth_deployment_requests_queued", labels()] == 0
    assert ("berth_requests_total", labels(route="/v1/completions", outcome="ok")) not in m

    completion_tokens = 0
    for max_tokens in (3, 5):
        resp = await api.post("/v1/completions", json={
            "model": "chat", "prompt": "a harbour", "max_tokens": max_tokens})
        assert resp.status == 200
        completion_tokens += (await resp.json())["usage"]["completion_tokens"]
    resp = await api.post("/v1/embeddings", json={"model": "chat", "input": "x"})
    assert resp.status == 400  # refused before the engine: rejected, still counted
    resp = await api.post("/v1/completions", json={"model": "chat", "prompt": 7})
    assert resp.status == 400  # a bad body for a known endpoint: rejected against it
    resp = await api.post("/v1/completions", json={"model": 7, "prompt": "x"})
    assert resp.status == 400  # no endpoint named: counted apart
    resp = await api.post("/v1/completions", json={"model": "nobody", "prompt": "x"})
    assert resp.status == 404  # no such endpoint: counted apart
    m = await scrape(api)
    route = "/v1/completions"
    assert m["berth_requests_total", labels(route=route, outcome="ok")] == 2
    assert m["berth_requests_total", labels(route="/v1/embeddings", outcome="rejected")] == 1
    assert m["berth_requests_total", labels(route=route, outcome="rejected")] == 1
    assert m["berth_request_duration_seconds_count", labels()] == 2  # rejected left out
    assert m["berth_request_duration_seconds_bucket", labels(le="+Inf")] == 2
    assert m["berth_request_duration_seconds_sum", labels()] > 0
    assert m["berth_request_ttfb_seconds_count", labels()] == 2
    assert m["berth_tokens_total", labels(kind="completion")] == completion_tokens
    assert m["berth_tokens_total", labels(kind="prompt")] > 0
    assert m["berth_requests_unrouted_total", frozenset()] == 2


async def test_metrics_are_admin_only(make_client):
    api = await make_client()
    assert (await api.post("/api/users", json={"name": "bob"})).status == 201
    resp = await api.post("/api/users/bob/keys", json={"name": "laptop"})
    assert resp.status == 201
    key = (await resp.json())["key"]
    resp = await api.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    assert resp.status == 403
    assert (await api.get("/metrics", headers=AUTH)).status == 200
