"""The caption (BLIP) and vqa (moondream2) engines on tiny random-weight stand-ins.

Engine apps run in-process (aiohttp test client, the real worker thread and model
loading code); the stand-ins come from engines.tiny.vision. Random weights: the tests
check shapes, types, usage, streaming and determinism, never the words.
"""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import zlib
from typing import Any

import pytest
from PIL import Image

from engines.app import STATE
from engines.image_input import pixel_budget
from engines.memory import MEMORY_LIMIT_ENV
from engines.protocol import Task
from engines.tiny.vision import BLIP_ID, MOONDREAM_ID
from tests.engines.conftest import make_spec, sse_events, wait_ready

IMAGE_PARAM = "messages.0.content.1.image_url.url"


def png_url(color: tuple[int, int, int] = (200, 40, 10), size: tuple[int, int] = (48, 40)) -> str:
    out = io.BytesIO()
    image = Image.new("RGB", size, color)
    image.putpixel((1, 1), (0, 0, 255))
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def chat(text: str | None, url: str | None = None, **extra: Any) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "text", "text": text})
    content.append({"type": "image_url", "image_url": {"url": url or png_url()}})
    return {"model": "x", "messages": [{"role": "user", "content": content}], **extra}


async def post(client: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with client.post("/v1/chat/completions", json=body) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        return resp.status, await resp.json()


def check_completion(body: dict[str, Any], n: int = 1) -> list[str]:
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    assert len(body["choices"]) == n
    texts = []
    for i, choice in enumerate(body["choices"]):
        assert choice["index"] == i
        assert choice["message"]["role"] == "assistant"
        assert isinstance(choice["message"]["content"], str)
        assert choice["finish_reason"] in ("stop", "length")
        texts.append(choice["message"]["content"])
    usage = body["usage"]
    assert all(isinstance(usage[k], int) and usage[k] >= 0 for k in usage)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    return texts


@pytest.fixture(scope="module")
def blip_path(tiny_zoo):
    return tiny_zoo.path(BLIP_ID)


@pytest.fixture(scope="module")
def moondream_path(tiny_zoo):
    return tiny_zoo.path(MOONDREAM_ID)


@pytest.fixture
async def blip(engine_client, blip_path):
    return await engine_client(make_spec(blip_path, Task.CAPTION, name="blip"))


@pytest.fixture
async def moondream(engine_client, moondream_path):
    return await engine_client(make_spec(moondream_path, Task.VQA, name="moondream",
                                         trust_remote_code=True))


# --- BLIP ------------------------------------------------------------------------------

async def test_blip_captions_an_image_greedily(blip) -> None:
    status, first = await post(blip, chat(None))
    assert status == 200, first
    (caption,) = check_completion(first)
    assert first["model"] == "blip"
    assert first["usage"]["prompt_tokens"] == 1  # [DEC]
    assert 1 <= first["usage"]["completion_tokens"] <= 40
    # no temperature given: greedy, the same caption every time
    assert (await post(blip, chat(None)))[1]["choices"][0]["message"]["content"] == caption
    status, zero = await post(blip, chat(None, temperature=0.0))
    assert zero["choices"][0]["message"]["content"] == caption


async def test_blip_text_is_the_caption_prefix(blip) -> None:
    status, body = await post(blip, chat("A photography of", max_tokens=5))
    assert status == 200, body
    (caption,) = check_completion(body)
    assert caption.startswith("a photography of")  # BLIP decodes lowercase
    assert body["usage"]["prompt_tokens"] == 4  # [DEC] a photography of
    assert body["usage"]["completion_tokens"] <= 5


async def test_blip_streams_the_same_caption(blip) -> None:
    status, whole = await post(blip, chat("a picture of"))
    assert status == 200, whole
    async with blip.post("/v1/chat/completions",
                         json=chat("a picture of", stream=True,
                                   stream_options={"include_usage": True})) as resp:
        events = await sse_events(resp)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == whole["choices"][0]["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


async def test_blip_sampling_with_a_seed_repeats(blip) -> None:
    body = chat(None, temperature=1.5, seed=7, n=2, max_tokens=8)
    status, one = await post(blip, body)
    assert status == 200, one
    texts = check_completion(one, n=2)
    assert check_completion((await post(blip, body))[1], n=2) == texts


async def test_blip_stop_string_cuts_the_caption(blip) -> None:
    caption = (await post(blip, chat("a picture of")))[1]["choices"][0]["message"]["content"]
    stop = caption[len("a picture of") + 2:][:2]
    if not stop.strip():
        pytest.skip(f"the greedy caption {caption!r} has no text to stop at")
    status, body = await post(blip, chat("a picture of", stop=[stop]))
    assert status == 200, body
    cut = body["choices"][0]
    assert cut["finish_reason"] == "stop"
    assert stop not in cut["message"]["content"]
    assert caption.startswith(cut["message"]["content"])


async def test_blip_context_limit_is_400(blip) -> None:
    status, body = await post(blip, chat(None, max_tokens=10_000))
    assert status == 400 and body["error"]["param"] == "max_tokens"
    assert body["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("url,status,code", [
    (png_url()[:120], 400, "invalid_image"),  # truncated data URL
    ("data:image/png;base64," + base64.b64encode(b"not a picture").decode(), 400,
     "invalid_image"),
    ("file:///etc/passwd", 400, None),  # refused by the request body's validation
    ("https://example.com/cat.png", 400, "image_url_fetch_disabled"),
])
async def test_bad_images_are_400_naming_the_part(blip, url, status, code) -> None:
    got, body = await post(blip, chat("a picture of", url))
    assert got == status, body
    assert body["error"]["param"] == IMAGE_PARAM
    if code:
        assert body["error"]["code"] == code


async def test_requests_without_one_image_are_400(blip) -> None:
    status, body = await post(blip, {"messages": [{"role": "user", "content": "a cat"}]})
    assert status == 400 and body["error"]["code"] == "image_missing"
    assert body["error"]["param"] == "messages"
    two = chat("x")
    two["messages"][0]["content"].append({"type": "image_url", "image_url": {"url": png_url()}})
    status, body = await post(blip, two)
    assert status == 400 and body["error"]["param"] == "messages.0.content.2.image_url.url"


async def test_blip_serves_only_chat(blip) -> None:
    async with blip.post("/v1/completions", json={"prompt": "x"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "unsupported_route"


# --- moondream2 stand-in (remote code) -------------------------------------------------

async def test_moondream_answers_the_question(moondream) -> None:
    body = chat("What color is it?", max_tokens=12, temperature=0)
    status, first = await post(moondream, body)
    assert status == 200, first
    (answer,) = check_completion(first)
    assert first["usage"]["prompt_tokens"] > 0
    assert 0 <= first["usage"]["completion_tokens"] <= 12
    assert (await post(moondream, body))[1]["choices"][0]["message"]["content"] == answer


async def test_moondream_without_a_question_captions(moondream) -> None:
    status, body = await post(moondream, chat(None, max_tokens=6))
    assert status == 200, body
    check_completion(body)
    assert body["usage"]["prompt_tokens"] == 0


async def test_moondream_streams_the_same_answer(moondream) -> None:
    whole = (await post(moondream, chat("Is it red?", max_tokens=10)))[1]
    async with moondream.post("/v1/chat/completions",
                              json=chat("Is it red?", max_tokens=10, stream=True)) as resp:
        events = await sse_events(resp)
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == whole["choices"][0]["message"]["content"]
    assert events[-2]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


async def test_moondream_sampling_with_a_seed_repeats(moondream) -> None:
    body = chat("What is this?", temperature=1.0, top_p=0.9, seed=3, max_tokens=8)
    first = (await post(moondream, body))[1]
    assert (await post(moondream, body))[1]["choices"] == first["choices"]


async def test_moondream_bad_image_is_400(moondream) -> None:
    status, body = await post(moondream, chat("What?", png_url()[:-40]))
    assert status == 400 and body["error"]["param"] == IMAGE_PARAM


async def test_moondream_loads_only_with_trust_remote_code(engine_client, moondream_path) -> None:
    spec = make_spec(moondream_path, Task.VQA, name="untrusted", trust_remote_code=False)
    client = await engine_client(spec, wait=False)
    health = await wait_ready(client)
    assert health["state"] == "failed"
    assert "trust_remote_code" in health["detail"]


# --- image size and memory (both engines) ----------------------------------------------

TIGHT_MEMORY = 400 * 1024**2  # the engine believes its cgroup allows this much


def big_png_url(width: int, height: int) -> str:
    """A real, decodable image of that size (one colour: a small PNG)."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 30)).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def header_only_png_url(width: int, height: int) -> str:
    """A PNG whose header claims width x height over almost no pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(data).decode()


@pytest.fixture(params=["blip", "moondream"])
async def tight_engine(request, engine_client, blip_path, moondream_path, monkeypatch):
    """Either vision engine, started believing its memory limit is TIGHT_MEMORY."""
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(TIGHT_MEMORY))
    if request.param == "blip":
        spec = make_spec(blip_path, Task.CAPTION, name="blip")
    else:
        spec = make_spec(moondream_path, Task.VQA, name="moondream", trust_remote_code=True)
    return await engine_client(spec)


async def test_images_over_the_budget_are_413_and_the_engine_answers_on(tight_engine) -> None:
    budget = pixel_budget(TIGHT_MEMORY)
    assert budget == TIGHT_MEMORY // 160 < 3000 * 2000
    for url, shown in [(header_only_png_url(20000, 20000), "far too many pixels"),
                       (header_only_png_url(8000, 6000), "8000x6000"),
                       (big_png_url(3000, 2000), "3000x2000")]:
        status, body = await post(tight_engine, chat("What is it?", url, max_tokens=3))
        assert status == 413, body
        error = body["error"]
        assert error["code"] == "image_too_large" and error["param"] == IMAGE_PARAM
        assert shown in error["message"] and f"at most {budget} pixels" in error["message"]
    status, body = await post(tight_engine, chat("What is it?", max_tokens=3))
    assert status == 200, body
    check_completion(body)


async def test_concurrent_large_images_are_decoded_one_at_a_time(tight_engine) -> None:
    gate = tight_engine.app[STATE].engine.images.gate
    pixels = 1600 * 1200  # each fits the budget alone; two together do not
    assert pixels <= gate.budget < 2 * pixels
    url = big_png_url(1600, 1200)
    results = await asyncio.gather(
        *(post(tight_engine, chat("What is it?", url, max_tokens=2)) for _ in range(4)))
    assert [status for status, _ in results] == [200] * 4, results
    assert gate.peak == pixels and gate.used == 0
