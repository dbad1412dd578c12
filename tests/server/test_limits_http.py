"""Per-deployment request limits, through the router, with a real tiny engine.
The test holds the gate's slots itself (same event loop as the in-process server)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from server.auth import TOKEN_ENV
from server.config import load_config
from tests.helpers import ADMIN_TOKEN, AUTH, write_config
from tests.server.conftest import supervisor_of, wait_for

CHAT = "berth-demo/tiny-random-llama-chat"
URL = "/endpoints/busy/v1/completions"
SMALL = {"prompt": "x", "max_tokens": 3}


@pytest.fixture(autouse=True)
def _admin_token(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, ADMIN_TOKEN)


async def start(aiohttp_client, tmp_path, tiny_models, limits: str = "", **dep) -> TestClient:
    path = write_config(tmp_path / "config.toml", state_dir=tmp_path / "state",
                        models_dir=tiny_models.models_dir,
                        deployments=[{"name": "busy", "model": CHAT, "hardware": "micro",
                                      **dep}])
    path.write_text(path.read_text() + f"\n[limits]\n{limits}\n")
    client = await aiohttp_client(create_app(load_config(path)), headers=AUTH,
                                  server_kwargs={"handler_cancellation": True})
    sup = supervisor_of(client)
    await wait_for(lambda: sup.get("busy").state == "ready", 60)
    return client


async def test_full_gate_answers_429_with_retry_after(aiohttp_client, tmp_path, tiny_models):
    api = await start(aiohttp_client, tmp_path, tiny_models, "retry_after_s = 7",
                      max_concurrent=1, max_queued=0)
    gate = supervisor_of(api).get("busy").gate
    async with gate.slot():
        info = await (await api.get("/api/deployments/busy")).json()
        assert info["requests"] == {"active": 1, "queued": 0, "max_concurrent": 1,
                                    "max_queued": 0}
        refused = await api.post(URL, json=SMALL)
        err = await refused.json()
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "7"
        assert err["error"]["code"] == "queue_full"
    ok = await api.post(URL, json=SMALL)
    assert ok.status == 200


async def test_long_wait_answers_503(aiohttp_client, tmp_path, tiny_models):
    api = await start(aiohttp_client, tmp_path, tiny_models,
                      "queue_timeout_s = 0.3\nmax_concurrent = 1\nmax_queued = 5")
    gate = supervisor_of(api).get("busy").gate
    async with gate.slot():
        late = await api.post(URL, json=SMALL)
        err = await late.json()
        assert late.status == 503 and err["error"]["code"] == "queue_timeout"
        assert late.headers["Retry-After"] == "2"
        assert (gate.active, gate.waiting) == (1, 0)
    assert (gate.active, gate.waiting) == (0, 0)


async def test_queued_requests_are_all_served(aiohttp_client, tmp_path, tiny_models):
    api = await start(aiohttp_client, tmp_path, tiny_models, "max_concurrent = 1")
    gate = supervisor_of(api).get("busy").gate
    async with gate.slot():
        reqs = [asyncio.create_task(api.post(URL, json=SMALL)) for _ in range(6)]
        await wait_for(lambda: gate.waiting == 6, 10)
    statuses = [r.status for r in await asyncio.gather(*reqs)]
    assert statuses == [200] * 6
    assert (gate.active, gate.waiting) == (0, 0)


async def test_a_client_gone_while_queued_leaves_the_queue(aiohttp_client, tmp_path,
                                                           tiny_models):
    api = await start(aiohttp_client, tmp_path, tiny_models, "max_concurrent = 1")
    gate = supervisor_of(api).get("busy").gate
    async with gate.slot():
        req = asyncio.create_task(api.post(URL, json=SMALL))
        await wait_for(lambda: gate.waiting == 1, 10)
        req.cancel()  # drops the connection; the server cancels the handler
        await wait_for(lambda: gate.waiting == 0, 10)
        assert gate.active == 1
    assert (gate.active, gate.waiting) == (0, 0)
    assert (await api.post(URL, json=SMALL)).status == 200


async def test_stopped_while_queued_answers_503(aiohttp_client, tmp_path, tiny_models):
    api = await start(aiohttp_client, tmp_path, tiny_models, "max_concurrent = 1")
    gate = supervisor_of(api).get("busy").gate
    async with gate.slot():
        req = asyncio.create_task(api.post(URL, json=SMALL))
        await wait_for(lambda: gate.waiting == 1, 10)
        assert (await api.post("/api/deployments/busy/stop")).status == 200
    resp = await req
    err = await resp.json()
    assert resp.status == 503 and err["error"]["code"] == "deployment_stopped"
    assert (gate.active, gate.waiting) == (0, 0)
