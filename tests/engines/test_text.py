"""The text engine on a tiny random Llama (and a tiny GPT-2 without a chat template)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import time
from typing import Any

import pytest
from aiohttp import web

from engines import protocol
from engines.app import STATE, create_app
from engines.protocol import Task

from .conftest import make_spec, sse_events, wait_ready

CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]


def _body(route: str, **extra: Any) -> dict[str, Any]:
    if route == protocol.CHAT_COMPLETIONS:
        return {"messages": CHAT, **extra}
    return {"prompt": "Hello, how are you", **extra}


def _text(route: str, choice: dict[str, Any]) -> str:
    return choice["message"]["content"] if route == protocol.CHAT_COMPLETIONS else choice["text"]


def _streamed(route: str, events: list[Any]) -> dict[int, dict[str, Any]]:
    """Per choice index: the joined text and the finish reason of a stream."""
    out: dict[int, dict[str, Any]] = {}
    for event in events:
        if event == "[DONE]":
            continue
        for choice in event["choices"]:
            acc = out.setdefault(choice["index"], {"text": "", "finish_reason": None})
            if route == protocol.CHAT_COMPLETIONS:
                acc["text"] += choice["delta"].get("content") or ""
            else:
                acc["text"] += choice["text"]
            if choice["finish_reason"]:
                acc["finish_reason"] = choice["finish_reason"]
    return out


async def _post(client: Any, route: str, body: Any) -> tuple[int, dict[str, Any]]:
    async with client.post(route, json=body) as resp:
        return resp.status, await resp.json()


ROUTES = [protocol.COMPLETIONS, protocol.CHAT_COMPLETIONS]


async def test_health_is_loading_then_ready(aiohttp_client, tiny_models) -> None:
    spec = make_spec(tiny_models.chat, Task.TEXT, name="health")
    app = create_app(spec, autoload=False)
    client = await aiohttp_client(app)
    async with client.get(protocol.HEALTH) as resp:
        assert resp.status == 200
        health = await resp.json()
    assert health == {
        "state": "loading",
        "pid": os.getpid(),
        "name": "health",
        "model": spec.model,
        "task": "text",
        "detail": health["detail"],
        "in_flight": 0,
        "context_length": None,
    }
    async with client.post(protocol.COMPLETIONS, json={"prompt": "x"}) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"]["code"] == "engine_loading"
    app[STATE].start_loading()
    health = await wait_ready(client)
    assert health["state"] == "ready"
    assert health["detail"] is None
    assert health["context_length"] == 512


async def test_load_failure_is_reported_then_exits(engine_client, tmp_path) -> None:
    client = await engine_client(make_spec(tmp_path / "nothing-here", Task.TEXT), wait=False)
    health = await wait_ready(client)
    assert health["state"] == "failed"
    assert health["detail"] == f"FileNotFoundError: no model folder at {tmp_path / 'nothing-here'}"
    async with asyncio.timeout(5):
        code = await client.app[STATE].exit_code
    assert code == protocol.EXIT_LOAD_FAILED


async def test_completion_shape(chat) -> None:
    status, body = await _post(
        chat, protocol.COMPLETIONS, {"prompt": "Hello", "max_tokens": 7, "temperature": 0}
    )
    assert status == 200, body
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["model"] == "chat"
    assert isinstance(body["created"], int)
    [choice] = body["choices"]
    assert set(choice) == {"index", "text", "logprobs", "finish_reason"}
    assert isinstance(choice["text"], str)
    usage = body["usage"]
    assert usage["prompt_tokens"] >= 2  # <s> Hello
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == 7
    else:
        assert choice["finish_reason"] == "stop"


async def test_chat_shape(chat) -> None:
    status, body = await _post(
        chat,
        protocol.CHAT_COMPLETIONS,
        {"messages": CHAT, "max_completion_tokens": 5, "temperature": 0},
    )
    assert status == 200, body
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    [choice] = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in {"stop", "length"}
    assert body["usage"]["completion_tokens"] <= 5


@pytest.mark.parametrize("route", ROUTES)
async def test_streamed_text_equals_non_streamed_at_temperature_0(chat, route) -> None:
    request = _body(route, max_tokens=40, temperature=0)
    status, whole = await _post(chat, route, request)
    assert status == 200, whole
    async with chat.post(route, json={**request, "stream": True}) as resp:
        events = await sse_events(resp)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    expected_object = (
        "chat.completion.chunk" if route == protocol.CHAT_COMPLETIONS else "text_completion"
    )
    assert all(c["object"] == expected_object and c["model"] == "chat" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert all("usage" not in c for c in chunks)
    if route == protocol.CHAT_COMPLETIONS:
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    streamed = _streamed(route, events)[0]
    assert streamed["text"] == _text(route, whole["choices"][0])
    assert len(streamed["text"]) > 5


@pytest.mark.parametrize("route", ROUTES)
async def test_include_usage_adds_a_final_usage_chunk(chat, route) -> None:
    request = _body(
        route, max_tokens=6, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    async with chat.post(route, json=request) as resp:
        events = await sse_events(resp)
    *chunks, usage_chunk, done = events
    assert done == "[DONE]"
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 1 <= usage["completion_tokens"] <= 6
    assert all(c["usage"] is None for c in chunks)


def _cut_at_first_stop(text: str, stops: list[str]) -> str:
    hits = [(i + len(s), i) for s in stops if (i := text.find(s)) >= 0]
    return text[: min(hits)[1]] if hits else text


@pytest.mark.parametrize("route", ROUTES)
async def test_stop_strings_cut_the_text_streamed_or_not(chat, route) -> None:
    status, free = await _post(chat, route, _body(route, max_tokens=40, temperature=0))
    assert status == 200
    full = _text(route, free["choices"][0])
    assert len(full) >= 12, full
    stops = [full[8:11], "\u2603never"]
    expected = _cut_at_first_stop(full, stops)
    status, cut = await _post(chat, route, _body(route, max_tokens=40, temperature=0, stop=stops))
    assert status == 200
    assert _text(route, cut["choices"][0]) == expected
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["usage"]["completion_tokens"] < 40
    async with chat.post(
        route, json=_body(route, max_tokens=40, temperature=0, stop=stops, stream=True)
    ) as resp:
        streamed = _streamed(route, await sse_events(resp))[0]
    assert streamed == {"text": expected, "finish_reason": "stop"}


async def test_seed_makes_sampling_reproducible(chat) -> None:
    body = {"prompt": "Once upon", "max_tokens": 20, "temperature": 1.0}
    texts = []
    for seed in (7, 7, 8):
        status, out = await _post(chat, protocol.COMPLETIONS, {**body, "seed": seed})
        assert status == 200
        texts.append(out["choices"][0]["text"])
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]


async def test_n_choices_streamed_and_not(chat) -> None:
    body = {"messages": CHAT, "max_tokens": 8, "temperature": 1.0, "seed": 3, "n": 2}
    status, whole = await _post(chat, protocol.CHAT_COMPLETIONS, body)
    assert status == 200
    assert [c["index"] for c in whole["choices"]] == [0, 1]
    texts = [c["message"]["content"] for c in whole["choices"]]
    assert texts[0] != texts[1]
    assert whole["usage"]["completion_tokens"] <= 16
    async with chat.post(protocol.CHAT_COMPLETIONS, json={**body, "stream": True}) as resp:
        streamed = _streamed(protocol.CHAT_COMPLETIONS, await sse_events(resp))
    assert sorted(streamed) == [0, 1]
    assert [streamed[i]["text"] for i in (0, 1)] == texts


async def test_prompt_as_token_ids(chat) -> None:
    status, body = await _post(
        chat, protocol.COMPLETIONS, {"prompt": [1, 50, 60], "max_tokens": 3, "temperature": 0}
    )
    assert status == 200
    assert body["usage"]["prompt_tokens"] == 3
    for prompt in ([1, 10**6], [-1]):
        status, body = await _post(chat, protocol.COMPLETIONS, {"prompt": prompt})
        assert status == 400
        assert body["error"]["param"] == "prompt"
        assert body["error"]["code"] == "invalid_value"
        assert "outside the vocabulary" in body["error"]["message"]


@pytest.mark.parametrize(
    ("route", "raw", "param", "code"),
    [
        (protocol.COMPLETIONS, b"[]", None, "invalid_body"),
        (protocol.COMPLETIONS, b"5", None, "invalid_body"),
        (protocol.COMPLETIONS, b"null", None, "invalid_body"),
        (protocol.COMPLETIONS, b'{"prompt": "x"', None, "invalid_json"),
        (protocol.COMPLETIONS, b"\xff\xfe", None, "invalid_json"),
        (protocol.COMPLETIONS, b"", None, "invalid_json"),
        (protocol.COMPLETIONS, b"[" * 100_000, None, "invalid_json"),
        (protocol.CHAT_COMPLETIONS, b'{"messages": "hi"}', "messages", "invalid_value"),
        (protocol.CHAT_COMPLETIONS, b'{"messages": []}', "messages", "invalid_value"),
        (protocol.CHAT_COMPLETIONS, b'{"messages": null}', "messages", "invalid_value"),
        (protocol.CHAT_COMPLETIONS, b'{"messages": [null]}', "messages.0", "invalid_value"),
        (protocol.COMPLETIONS, b'{"prompt": "x", "max_tokens": -1}', "max_tokens",
         "invalid_value"),
        (protocol.COMPLETIONS, b'{"prompt": "x", "temperature": "hot"}', "temperature",
         "invalid_value"),
        (protocol.COMPLETIONS, b'{"prompt": "x", "n": 9}', "n", "invalid_value"),
        (protocol.COMPLETIONS, b'{"max_tokens": 3}', "prompt", "invalid_value"),
        (protocol.COMPLETIONS, b'{"prompt": null}', "prompt", "invalid_value"),
        (protocol.EMBEDDINGS, b'{"input": "x"}', None, "unsupported_route"),
    ],
)
async def test_bad_bodies_are_400_with_param(chat, route, raw, param, code) -> None:
    async with chat.post(route, data=raw, headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert set(body["error"]) == {"message", "type", "code", "param"}
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == param
    assert body["error"]["code"] == code
    message = body["error"]["message"]
    # JSON's words, never Python's: no "NoneType", "instance of ChatMessage", "at 0x7f.."
    assert message and not any(python in message for python in (
        "NoneType", "instance of", " at 0x", "ChatMessage", "dictionary"))
    if raw == b"null":
        assert message.endswith("not null")


async def test_context_length_exceeded(chat) -> None:
    status, body = await _post(chat, protocol.COMPLETIONS, {"prompt": [1, 40], "max_tokens": 600})
    assert status == 400
    assert body["error"]["code"] == "context_length_exceeded"
    assert body["error"]["param"] == "max_tokens"
    assert "512" in body["error"]["message"] and "602" in body["error"]["message"]
    status, body = await _post(chat, protocol.COMPLETIONS, {"prompt": [5] * 512})
    assert status == 400
    assert body["error"]["code"] == "context_length_exceeded"
    assert body["error"]["param"] == "prompt"


async def test_huge_prompts_are_refused_and_health_keeps_answering(chat) -> None:
    """A multi-MB prompt must not stall the engine: the health route stays quick."""
    huge = "word " * 1_500_000  # 7.5 MB: millions of tokens
    async def post(route: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        data = io.BytesIO(json.dumps(body).encode())
        async with chat.post(route, data=data,
                             headers={"Content-Type": "application/json"}) as resp:
            return resp.status, await resp.json()

    requests = [
        post(protocol.COMPLETIONS, {"prompt": huge}),
        post(protocol.CHAT_COMPLETIONS, {"messages": [{"role": "user", "content": huge}]}),
    ]
    slowest = 0.0

    async def ping() -> None:
        nonlocal slowest
        for _ in range(10):
            t0 = asyncio.get_running_loop().time()
            async with chat.get(protocol.HEALTH) as resp:
                assert resp.status == 200
            slowest = max(slowest, asyncio.get_running_loop().time() - t0)
            await asyncio.sleep(0.05)

    *answers, _ = await asyncio.gather(*requests, ping())
    for (status, body), param in zip(answers, ("prompt", "messages"), strict=True):
        assert status == 400
        assert body["error"]["code"] == "context_length_exceeded"
        assert body["error"]["param"] == param
    assert slowest < 2.0  # generous: the supervisor's health timeout is 5 s


async def test_default_max_tokens_fits_the_remaining_context(chat) -> None:
    status, body = await _post(chat, protocol.COMPLETIONS, {"prompt": [5] * 509, "temperature": 0})
    assert status == 200, body
    assert body["usage"]["completion_tokens"] <= 3


async def test_image_parts_are_refused(chat) -> None:
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    status, body = await _post(
        chat, protocol.CHAT_COMPLETIONS, {"messages": [{"role": "user", "content": content}]}
    )
    assert status == 400
    assert body["error"]["code"] == "image_input_unsupported"
    assert body["error"]["param"] == "messages.0.content"


async def test_text_parts_are_joined(chat) -> None:
    content = [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]
    status, body = await _post(
        chat,
        protocol.CHAT_COMPLETIONS,
        {"messages": [{"role": "user", "content": content}], "max_tokens": 2},
    )
    assert status == 200, body


async def test_base_model_has_no_chat_but_completes(engine_client, tiny_models) -> None:
    client = await engine_client(make_spec(tiny_models.base, Task.TEXT, name="base"))
    status, body = await _post(client, protocol.CHAT_COMPLETIONS, {"messages": CHAT})
    assert status == 400
    assert body["error"]["code"] == "chat_template_missing"
    assert protocol.COMPLETIONS in body["error"]["message"]
    status, body = await _post(
        client, protocol.COMPLETIONS, {"prompt": "Hello", "max_tokens": 4, "temperature": 0}
    )
    assert status == 200, body
    async with client.get(protocol.HEALTH) as resp:
        assert (await resp.json())["context_length"] == 256


async def test_routes_the_engine_does_not_serve(chat) -> None:
    status, body = await _post(chat, protocol.EMBEDDINGS, {"input": "x"})
    assert status == 400
    assert body["error"]["code"] == "unsupported_route"
    assert protocol.CHAT_COMPLETIONS in body["error"]["message"]
    async with chat.get("/v1/nothing") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["message"]
    async with chat.get(protocol.COMPLETIONS) as resp:
        assert resp.status == 405
        assert "error" in await resp.json()


async def test_an_unexpected_failure_is_a_json_500_and_the_engine_lives(
    aiohttp_client, tiny_models
) -> None:
    app = create_app(make_spec(tiny_models.chat, Task.TEXT))

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    app.router.add_get("/broken", broken)
    client = await aiohttp_client(app)
    await wait_ready(client)
    async with client.get("/broken") as resp:
        assert resp.status == 500
        body = await resp.json()
    assert body["error"]["code"] == "engine_error"
    assert "boom" in body["error"]["message"]
    status, _ = await _post(client, protocol.COMPLETIONS, {"prompt": "x", "max_tokens": 1})
    assert status == 200


async def test_health_answers_while_generating(chat) -> None:
    body = {"prompt": "Hello", "max_tokens": 400, "temperature": 0}
    generation = asyncio.create_task(_post(chat, protocol.COMPLETIONS, body))
    seen_busy = False
    while not generation.done():
        started = time.monotonic()
        async with chat.get(protocol.HEALTH) as resp:
            health = await resp.json()
        assert time.monotonic() - started < 0.5
        seen_busy = seen_busy or health["in_flight"] == 1
        await asyncio.sleep(0.01)
    status, _ = await generation
    assert status == 200
    assert seen_busy


async def test_client_going_away_stops_the_generation(chat, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="engines.generate")
    body = {"prompt": "Hello", "max_tokens": 480, "temperature": 0, "stream": True}
    resp = await chat.post(protocol.COMPLETIONS, json=body)
    await resp.content.readuntil(b"\n\n")
    resp.close()
    ends: list[logging.LogRecord] = []
    async with asyncio.timeout(10):
        while not ends:
            await asyncio.sleep(0.02)
            ends = [r for r in caplog.records if "generation cancelled" in r.getMessage()]
    generated = ends[0].args[0] if isinstance(ends[0].args, tuple) else None
    assert isinstance(generated, int) and generated < 480
    async with chat.get(protocol.HEALTH) as health:
        assert (await health.json())["in_flight"] == 0
