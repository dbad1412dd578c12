"""Image to text through the router: BLIP captioning and moondream2, deployed through the
admin API of one server.

Tiny random-weight stand-ins (engines.tiny.vision) sit under the real catalog ids, so
the catalog (task, trust_remote_code for moondream2 only), the memory estimate, the
supervisor, real engine processes in real slices and the router all run as they would
for the real weights.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

from PIL import Image

from engines.tiny.vision import BLIP_ID, MOONDREAM_ID

READY_WITHIN_S = 120.0
IMAGE_PARAM = "messages.0.content.1.image_url.url"


def png_url() -> str:
    out = io.BytesIO()
    image = Image.new("RGB", (40, 30), (20, 160, 90))
    image.putpixel((3, 3), (255, 255, 255))
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def chat(model: str, text: str | None, url: str, **extra: Any) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "text", "text": text})
    content.append({"type": "image_url", "image_url": {"url": url}})
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


async def _post(client: Any, body: dict[str, Any], path: str = "/v1/chat/completions"
                ) -> tuple[int, dict[str, Any]]:
    async with client.post(path, json=body) as resp:
        assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
        return resp.status, await resp.json()


async def _wait_ready(client: Any, name: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_WITHIN_S
    while True:
        async with client.get(f"/api/deployments/{name}") as resp:
            dep: dict[str, Any] = await resp.json()
        assert dep["status"] not in {"failed", "crashed"}, dep
        if dep["status"] == "ready":
            return dep
        assert loop.time() < deadline, f"{name} not ready in {READY_WITHIN_S}s: {dep}"
        await asyncio.sleep(0.25)


def _answer(body: dict[str, Any]) -> str:
    assert body["object"] == "chat.completion", body
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    content = choice["message"]["content"]
    assert isinstance(content, str)
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    return content


async def test_caption_and_vqa_deploy_and_answer(make_client, tiny_zoo, tmp_path,
                                                 monkeypatch) -> None:
    # the engines copy moondream2's remote code here (default: ~/.cache/huggingface)
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    models = tiny_zoo.models_dir(tmp_path / "models", BLIP_ID, MOONDREAM_ID)
    client = await make_client(models_dir=models)
    for name, model in (("blip", BLIP_ID), ("moondream", MOONDREAM_ID)):
        async with client.post("/api/deployments",
                               json={"name": name, "model": model, "hardware": "micro"}) as resp:
            assert resp.status == 201, await resp.text()
    deps = await asyncio.gather(_wait_ready(client, "blip"), _wait_ready(client, "moondream"))
    assert [d["model"] for d in deps] == [BLIP_ID, MOONDREAM_ID]
    url = png_url()

    # BLIP: the text part is the caption's prefix; greedy at temperature 0
    status, body = await _post(client, chat("blip", "a picture of", url, temperature=0))
    assert status == 200, body
    caption = _answer(body)
    assert caption.startswith("a picture of") and body["model"] == "blip"
    status, again = await _post(client, chat("blip", "a picture of", url, temperature=0))
    assert _answer(again) == caption

    # moondream2 through its remote code: the text part is the question
    question = chat("moondream", "What is in the picture?", url, temperature=0, max_tokens=16)
    status, body = await _post(client, question)
    assert status == 200, body
    answer = _answer(body)
    assert body["usage"]["completion_tokens"] <= 16
    assert _answer((await _post(client, question))[1]) == answer

    # streamed through the router: the same answer, then the usage, then [DONE]
    async with client.post("/v1/chat/completions", json={**question, "stream": True}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = (await resp.read()).decode()
    events = [b[len("data: "):] for b in raw.strip().split("\n\n") if b.startswith("data: ")]
    assert events[-1] == "[DONE]"
    streamed = "".join(json.loads(e)["choices"][0]["delta"].get("content", "")
                       for e in events[:-1])
    assert streamed == answer

    # bad input: 400 naming the part, never 500, on both engines
    for name in ("blip", "moondream"):
        status, body = await _post(client, chat(name, "what?", url[:100]))  # truncated
        assert status == 400, body
        assert body["error"]["param"] == IMAGE_PARAM and body["error"]["code"] == "invalid_image"
        status, body = await _post(client, chat(name, "what?", "file:///etc/passwd"))
        assert status == 400, body
        assert body["error"]["param"] == IMAGE_PARAM and "file:" in body["error"]["message"]
        status, body = await _post(client, {"model": name, "messages": [
            {"role": "user", "content": "what is in the picture?"}]})
        assert status == 400 and body["error"]["code"] == "image_missing", body
        status, body = await _post(client, {"model": name, "prompt": "x"}, "/v1/completions")
        assert status == 400 and body["error"]["code"] == "unsupported_route", body

    assert any((tmp_path / "hf-modules").rglob("moondream_standin.py"))

    # the engines lived through all of it
    for name in ("blip", "moondream"):
        async with client.get(f"/api/deployments/{name}") as resp:
            dep = await resp.json()
        assert dep["status"] == "ready" and dep["restarts"] == 0, dep
