"""Every text family and Llama Guard 2, deployed through the admin API of one server.

Tiny random-weight stand-ins (engines.tiny.text_families) sit under the real catalog
ids, so the catalog, the memory estimate, the supervisor, real engine processes in
real slices and the router all run as they would for the real weights. The twelve
deployments load concurrently; one test then calls each through the router.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

from engines.moderation import OPENAI_CATEGORIES

log = logging.getLogger(__name__)

GUARD = "guard"
# endpoint name -> (catalog id, has a chat template)
DEPLOYMENTS: dict[str, tuple[str, bool]] = {
    "llama3": ("meta-llama/Meta-Llama-3-8B-Instruct", True),
    "llama31": ("meta-llama/Meta-Llama-3.1-8B", False),
    "mistral3": ("mistralai/Mistral-7B-Instruct-v0.3", True),
    "mistral1": ("mistralai/Mistral-7B-Instruct-v0.1", True),
    "gemma7b": ("google/gemma-7b", False),
    "gemma2b": ("google/gemma-2b-it", True),
    "opt": ("facebook/opt-125m", False),
    "gpt2": ("openai-community/gpt2-large", False),
    "phi2": ("microsoft/phi-2", False),
    "mamba2": ("mistralai/Mamba-Codestral-7B-v0.1", False),
    "olmoe": ("allenai/OLMoE-1B-7B-0924", False),
    GUARD: ("meta-llama/Meta-Llama-Guard-2-8B", True),
}
READY_WITHIN_S = 240.0


async def _json(resp: Any) -> dict[str, Any]:
    assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
    body: dict[str, Any] = await resp.json()
    return body


async def _post(client: Any, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with client.post(path, json=body) as resp:
        return resp.status, await _json(resp)


def _seconds(since: str, until: str) -> float:
    return (datetime.fromisoformat(until) - datetime.fromisoformat(since)).total_seconds()


async def _wait_ready(client: Any, name: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_WITHIN_S
    while True:
        async with client.get(f"/api/deployments/{name}") as resp:
            dep = await _json(resp)
        assert dep["status"] not in {"failed", "crashed"}, dep
        if dep["status"] == "ready":
            return dep
        assert loop.time() < deadline, f"{name} not ready in {READY_WITHIN_S}s: {dep}"
        await asyncio.sleep(0.25)


async def test_every_family_deploys_and_answers(make_client, tiny_zoo, tmp_path) -> None:
    ids = [model for model, _ in DEPLOYMENTS.values()]
    client = await make_client(models_dir=tiny_zoo.models_dir(tmp_path / "models", *ids))

    started = time.monotonic()
    for name, (model, _) in DEPLOYMENTS.items():
        status, dep = await _post(client, "/api/deployments",
                                  {"name": name, "model": model, "hardware": "micro"})
        assert status == 201, dep
        assert dep["model"] == model
    ready = await asyncio.gather(*(_wait_ready(client, name) for name in DEPLOYMENTS))
    log.info("%d deployments ready in %.1fs: %s", len(ready), time.monotonic() - started,
             ", ".join(f"{d['name']} {_seconds(d['created_at'], d['ready_at']):.1f}s"
                       for d in ready))
    assert [d["name"] for d in ready] == list(DEPLOYMENTS)
    assert {d["task"] for d in ready} == {"text", "moderation"}
    await _check_dtypes(client)

    for name, (_, has_template) in DEPLOYMENTS.items():
        if name == GUARD:
            continue
        greedy = {"model": name, "prompt": "Hello, how are you", "max_tokens": 8,
                  "temperature": 0}
        first, second = [await _post(client, "/v1/completions", greedy) for _ in range(2)]
        for status, body in (first, second):
            assert status == 200, (name, body)
            assert body["object"] == "text_completion" and body["model"] == name
            assert isinstance(body["choices"][0]["text"], str)
            assert 1 <= body["usage"]["completion_tokens"] <= 8
        assert first[1]["choices"] == second[1]["choices"], name

        chat = {"model": name, "messages": [{"role": "user", "content": "hi there"}],
                "max_tokens": 6, "temperature": 0}
        status, body = await _post(client, "/v1/chat/completions", chat)
        if has_template:
            assert status == 200, (name, body)
            assert body["object"] == "chat.completion"
            assert isinstance(body["choices"][0]["message"]["content"], str)
            again = await _post(client, "/v1/chat/completions", chat)
            assert again[1]["choices"] == body["choices"], name
        else:
            assert status == 400, (name, body)
            assert body["error"]["code"] == "chat_template_missing"
            assert body["error"]["param"] == "messages"

        status, body = await _post(client, "/v1/moderations", {"model": name, "input": "x"})
        assert status == 400 and body["error"]["code"] == "unsupported_route", (name, body)

    await _check_guard(client)


async def _check_dtypes(client: Any) -> None:
    """Each engine loads its weights in the dtype the catalog's memory figure assumes
    (bf16 where the CPU has it, else fp32), and the tiny weights fit the micro tier."""
    async with client.get("/api/models") as resp:
        rows = {r["id"]: r for r in (await _json(resp))["data"]}
    for name, (model, _) in DEPLOYMENTS.items():
        row = rows[model]
        assert row["present"] and row["memory_source"] == "weights", row
        assert row["smallest_tier"] == "micro", row
        async with client.get(f"/api/deployments/{name}/logs") as resp:
            lines = (await _json(resp))["lines"]
        loaded = [line for line in lines if " loaded " in line]
        assert loaded and f"torch.{row['dtype']}" in loaded[-1], (name, row["dtype"], loaded)


async def _check_guard(client: Any) -> None:
    inputs = ["how do I bake bread", "tell me a story"]
    status, body = await _post(client, "/v1/moderations", {"model": GUARD, "input": inputs})
    assert status == 200, body
    assert body["id"].startswith("modr-") and body["model"] == GUARD
    assert len(body["results"]) == 2
    for result in body["results"]:
        assert isinstance(result["flagged"], bool)
        assert list(result["categories"]) == list(OPENAI_CATEGORIES)
        assert all(isinstance(v, bool) for v in result["categories"].values())
        assert all(isinstance(v, float) for v in result["category_scores"].values())
        assert result["llama_guard"]["verdict"] in {"safe", "unsafe", "unparseable"}
    status, again = await _post(client, "/v1/moderations", {"model": GUARD, "input": inputs})
    assert status == 200 and again["results"] == body["results"]

    chat = {"model": GUARD, "messages": [{"role": "user", "content": inputs[0]}],
            "temperature": 0, "max_tokens": 48}
    status, verdict = await _post(client, "/v1/chat/completions", chat)
    assert status == 200, verdict
    assert verdict["object"] == "chat.completion"
    assert verdict["choices"][0]["message"]["content"] == \
        body["results"][0]["llama_guard"]["output"]

    status, refused = await _post(client, "/v1/completions", {"model": GUARD, "prompt": "x"})
    assert status == 400 and refused["error"]["code"] == "unsupported_route"
    status, bad = await _post(client, "/v1/moderations", {"model": GUARD, "input": []})
    assert status == 400 and bad["error"]["param"] == "input"
