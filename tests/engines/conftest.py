"""Engine apps driven in-process with aiohttp's test client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from engines.app import create_app
from engines.protocol import EngineSpec, Task

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def make_spec(model_path: Path, task: Task, name: str = "dep1", **extra: Any) -> EngineSpec:
    # float32, not "auto": auto means bf16 only on CPUs that have it, and greedy text
    # would then depend on the machine.
    extra.setdefault("dtype", "float32")
    return EngineSpec(
        name=name,
        task=task,
        model=f"test/{model_path.name}",
        model_path=str(model_path),
        socket_path=str(model_path.parent / f"{name}.sock"),  # unused in-process
        **extra,
    )


async def wait_ready(client: TestClient[Any, Any]) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            async with client.get("/health") as resp:
                health: dict[str, Any] = await resp.json()
            if health["state"] != "loading":
                return health
            await asyncio.sleep(0.02)


@pytest.fixture
def engine_client(aiohttp_client) -> ClientFactory:
    """`await engine_client(spec)`: a test client on a loaded engine app."""

    async def start(spec: EngineSpec, *, wait: bool = True) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(create_app(spec))
        if wait:
            health = await wait_ready(client)
            assert health["state"] == "ready", health
        return client

    return start


@pytest.fixture
async def chat(engine_client, tiny_models) -> TestClient[Any, Any]:
    return await engine_client(make_spec(tiny_models.chat, Task.TEXT, name="chat"))


async def sse_events(resp: Any) -> list[Any]:
    """The `data:` payloads of an SSE response, JSON-decoded ([DONE] kept as a string)."""
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    raw = (await resp.read()).decode()
    assert raw.endswith("\n\n")
    events = []
    comments = [b for b in raw.strip().split("\n\n") if b.startswith(":")]
    # the one SSE comment: the usage for the router's accounting, just before [DONE]
    assert len(comments) == 1 and comments[0].startswith(": berth-usage {"), comments
    for block in raw.strip().split("\n\n"):
        if block.startswith(":"):
            continue
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events
