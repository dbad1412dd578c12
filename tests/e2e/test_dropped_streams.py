"""200 clients open streams and drop them after the first chunk: nothing is left behind."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.e2e.conftest import CHAT_MODEL
from tests.helpers import AUTH

pytestmark = pytest.mark.e2e


async def _drop_after_first_chunk(session: aiohttp.ClientSession, url: str) -> int | str:
    body = {"model": "chat", "prompt": "once upon a time", "max_tokens": 400, "temperature": 0,
            "stream": True}
    async with session.post(url, json=body) as resp:
        if resp.status == 200:
            await resp.content.readuntil(b"\n\n")
        if resp.status != 200:
            return f"{resp.status} {await resp.text()}"
        return resp.status  # leaving the block closes the connection mid-stream


async def _storm(url: str, clients: int) -> list[int | str]:
    connector = aiohttp.TCPConnector(limit=clients, force_close=True)
    async with aiohttp.ClientSession(connector=connector, headers=AUTH) as session:
        return await asyncio.gather(*(_drop_after_first_chunk(session, url)
                                      for _ in range(clients)))


def test_dropped_streams_free_their_slots_and_stop_the_engine(berth):
    server = berth([{"name": "chat", "model": CHAT_MODEL, "hardware": "micro",
                     "max_concurrent": 8, "max_queued": 200}])
    server.wait_status("chat", "ready")
    tasks_before = server.http.get("/api/status").json()["tasks"]

    statuses = asyncio.run(_storm(f"{server.url}/v1/completions", 200))
    assert statuses.count(200) == 200, [s for s in statuses if s != 200][:3]

    # no slot held, nothing queued, the server's tasks back where they were
    server.wait(lambda: server.deployment("chat")["requests"]["active"] == 0, 10, "slots")
    dep = server.deployment("chat")
    assert dep["requests"]["queued"] == 0
    server.wait(lambda: server.http.get("/api/status").json()["tasks"] <= tasks_before + 2, 10,
                "the server's tasks to settle")
    # the engine is idle: its CPU stops climbing within ~2 s
    time.sleep(2)
    first = server.deployment("chat")["usage"]["cpu_seconds"]
    time.sleep(2)
    second = server.deployment("chat")["usage"]["cpu_seconds"]
    assert second - first < 0.5, f"engine still busy: {second - first:.2f} CPU-s in 2 s"
    # and it still answers normally
    resp = server.http.post("/v1/completions", json={"model": "chat", "prompt": "hi",
                                                     "max_tokens": 3})
    assert resp.status_code == 200
    assert server.deployment("chat")["pid"] == dep["pid"]
