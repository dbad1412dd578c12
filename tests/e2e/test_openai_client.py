"""The real `berth serve` with the default config's two deployments, via the openai SDK."""

from __future__ import annotations

import math
import re

import httpx
import openai
import pytest

from tests.e2e.conftest import CHAT_MODEL, EMBED_MODEL
from tests.helpers import ADMIN_TOKEN, AUTH

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say something about harbours."}]


@pytest.fixture(scope="module")
def server(berth_module):
    server = berth_module([
        {"name": "chat", "model": CHAT_MODEL, "hardware": "micro"},
        {"name": "embed", "model": EMBED_MODEL, "hardware": "micro"},
    ])
    server.wait_status("chat", "ready")
    server.wait_status("embed", "ready")
    return server


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key=ADMIN_TOKEN, max_retries=0) as c:
        yield c


def test_models_lists_the_endpoints(client):
    ids = sorted(m.id for m in client.models.list())
    assert ids == ["chat", "embed"]
    chat = client.models.retrieve("chat")
    assert (chat.id, chat.object, chat.owned_by) == ("chat", "model", "admin")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nobody")


def test_chat_streamed_equals_non_streamed_at_temperature_0(client):
    full = client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=40,
                                          temperature=0)
    choice = full.choices[0]
    assert full.object == "chat.completion"
    assert full.model == "chat"
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert full.usage.completion_tokens >= 1
    assert full.usage.total_tokens == full.usage.prompt_tokens + full.usage.completion_tokens

    chunks = list(client.chat.completions.create(
        model="chat", messages=MESSAGES, max_tokens=40, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == choice.finish_reason
    assert all(f is None for f in finishes[:-1])
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1]
    assert usage_chunks[0].usage.completion_tokens == full.usage.completion_tokens
    assert usage_chunks[0].usage.prompt_tokens == full.usage.prompt_tokens


def test_completion_streamed_equals_non_streamed(client):
    full = client.completions.create(model="chat", prompt="The harbour at dawn", max_tokens=30,
                                     temperature=0)
    assert full.object == "text_completion"
    assert full.usage.completion_tokens >= 1
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="chat", prompt="The harbour at dawn", max_tokens=30, temperature=0, stream=True))
    assert streamed == full.choices[0].text


def test_seeded_sampling_is_deterministic_and_n_gives_n_choices(client):
    kw = {"model": "chat", "messages": MESSAGES, "max_tokens": 12, "temperature": 1.0,
          "seed": 7, "n": 2}
    a = client.chat.completions.create(**kw)
    b = client.chat.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]


def test_endpoint_prefix_route_needs_no_model(server):
    with openai.OpenAI(base_url=server.url + "/endpoints/chat/v1", api_key=ADMIN_TOKEN,
                       max_retries=0) as c:
        out = c.completions.create(model="", prompt="hello", max_tokens=3, temperature=0)
    assert len(out.choices) == 1


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_real_minilm_embeddings_rank_by_meaning(client):
    texts = ["a cat sits on the mat", "a kitten rests on a rug",
             "stock markets fell sharply today"]
    out = client.embeddings.create(model="embed", input=texts)
    vecs = [d.embedding for d in sorted(out.data, key=lambda d: d.index)]
    assert [len(v) for v in vecs] == [384, 384, 384]
    assert _cos(vecs[0], vecs[1]) > _cos(vecs[0], vecs[2]) + 0.3
    single = client.embeddings.create(model="embed", input=texts[0])
    assert _cos(single.data[0].embedding, vecs[0]) > 0.999
    assert out.usage.prompt_tokens > 0


def test_unknown_endpoint_is_404_model_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=MESSAGES)
    assert e.value.body["code"] == "model_not_found"


def test_wrong_route_for_the_task_is_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="chat", input="x")
    assert "/v1/chat/completions" in e.value.body["message"]


@pytest.mark.parametrize(("body", "param"), [
    (b"[]", None), (b"5", None), (b'{"model": "chat", "messages": [{"ro', None),
    (b'{"model": "chat", "messages": "hello"}', "messages"),
    (b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}',
     "max_tokens"),
])
def test_bad_input_is_400_and_the_engine_keeps_its_pid(server, body, param):
    pid = server.deployment("chat")["pid"]
    resp = server.http.post("/v1/chat/completions", content=body,
                            headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["param"] == param
    assert err["message"]
    # the same bodies straight to the endpoint route
    resp = server.http.post("/endpoints/chat/v1/chat/completions", content=body)
    assert resp.status_code == 400
    dep = server.deployment("chat")
    assert (dep["pid"], dep["status"]) == (pid, "ready")


def test_context_length_exceeded_is_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="chat", prompt="hi", max_tokens=100_000)
    assert e.value.body["code"] == "context_length_exceeded"


def test_client_disconnect_mid_stream_stops_the_generation(server):
    """Drop a long stream after its first chunk: the engine stops generating."""
    body = {"model": "chat", "prompt": "once upon a time", "max_tokens": 400,
            "temperature": 0, "stream": True}
    with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as h, \
            h.stream("POST", "/v1/completions", json=body) as resp:
        assert resp.status_code == 200
        next(resp.iter_bytes())
    # The engine says how far the generation got before it was cancelled.
    log_path = server.state_dir / "logs" / "chat.log"
    pattern = re.compile(r"generation cancelled after (\d+) new tokens")
    server.wait(lambda: pattern.search(log_path.read_text()) is not None, 30,
                "the engine to log a cancelled generation")
    generated = int(pattern.search(log_path.read_text()).group(1))
    assert generated < 400
    assert server.deployment("chat")["status"] == "ready"
