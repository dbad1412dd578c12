"""Every text family of the catalog, and Llama Guard 2, as in-process engine apps.

Each family is a tiny random-weight model of the real architecture (engines.tiny).
Greedy and seeded text must repeat exactly; chat works where the tokenizer has a
template and is a 400 where it has none; the guard answers /v1/moderations in
OpenAI's shape with a defined result for any output.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from engines import protocol
from engines.moderation import (
    GUARD_CODES,
    OPENAI_CATEGORIES,
    UNPARSEABLE,
    Verdict,
    moderation_result,
    parse_verdict,
)
from engines.protocol import Task
from engines.tiny.text_families import GUARD_CATEGORIES

from .conftest import make_spec, sse_events

GUARD = "meta-llama/Meta-Llama-Guard-2-8B"
# catalog id -> (architecture class, has a chat template, context length)
FAMILIES: dict[str, tuple[str, bool, int]] = {
    "meta-llama/Meta-Llama-3-8B-Instruct": ("LlamaForCausalLM", True, 512),
    "meta-llama/Meta-Llama-3.1-8B": ("LlamaForCausalLM", False, 512),
    "mistralai/Mistral-7B-Instruct-v0.3": ("MistralForCausalLM", True, 512),
    "mistralai/Mistral-7B-Instruct-v0.1": ("MistralForCausalLM", True, 512),
    "google/gemma-7b": ("GemmaForCausalLM", False, 512),
    "google/gemma-2b-it": ("GemmaForCausalLM", True, 512),
    "facebook/opt-125m": ("OPTForCausalLM", False, 512),
    "openai-community/gpt2-large": ("GPT2LMHeadModel", False, 512),
    "microsoft/phi-2": ("PhiForCausalLM", False, 512),
    "mistralai/Mamba-Codestral-7B-v0.1": ("Mamba2ForCausalLM", False, 512),
    "allenai/OLMoE-1B-7B-0924": ("OlmoeForCausalLM", False, 512),
}
CHAT = [{"role": "user", "content": "hi there"}]


async def _post(client: Any, route: str, body: Any) -> tuple[int, dict[str, Any]]:
    # a stream, not bytes: aiohttp warns about large bodies sent in one piece
    data = io.BytesIO(json.dumps(body).encode())
    headers = {"Content-Type": "application/json"}
    async with client.post(route, data=data, headers=headers) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        return resp.status, await resp.json()


async def _family_client(engine_client, tiny_zoo, model_id: str) -> Any:
    task = Task.MODERATION if model_id == GUARD else Task.TEXT
    return await engine_client(make_spec(tiny_zoo.path(model_id), task, name="fam"))


@pytest.mark.parametrize("model_id", list(FAMILIES))
async def test_family_answers_completions_and_chat(engine_client, tiny_zoo, model_id) -> None:
    arch, has_template, context = FAMILIES[model_id]
    folder = tiny_zoo.path(model_id)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [arch]
    client = await _family_client(engine_client, tiny_zoo, model_id)
    async with client.get(protocol.HEALTH) as resp:
        assert (await resp.json())["context_length"] == context

    greedy = {"prompt": "Hello, how are you", "max_tokens": 12, "temperature": 0}
    answers = [await _post(client, protocol.COMPLETIONS, greedy) for _ in range(2)]
    for status, body in answers:
        assert status == 200, body
        assert body["object"] == "text_completion" and body["model"] == "fam"
        [choice] = body["choices"]
        assert isinstance(choice["text"], str)
        assert choice["finish_reason"] in {"stop", "length"}
        usage = body["usage"]
        assert 1 <= usage["completion_tokens"] <= 12
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert answers[0][1]["choices"] == answers[1][1]["choices"]

    async with client.post(protocol.COMPLETIONS, json={**greedy, "stream": True}) as resp:
        events = await sse_events(resp)
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == \
        answers[0][1]["choices"][0]["text"]

    sampled = {"prompt": "Once upon", "max_tokens": 10, "temperature": 1.0}
    texts = []
    for seed in (11, 11):
        status, body = await _post(client, protocol.COMPLETIONS, {**sampled, "seed": seed})
        assert status == 200, body
        texts.append(body["choices"][0]["text"])
    assert texts[0] == texts[1]

    chat = {"messages": CHAT, "max_tokens": 8, "temperature": 0}
    status, body = await _post(client, protocol.CHAT_COMPLETIONS, chat)
    if has_template:
        assert status == 200, body
        assert body["object"] == "chat.completion"
        message = body["choices"][0]["message"]
        assert message["role"] == "assistant" and isinstance(message["content"], str)
        assert body["usage"]["completion_tokens"] <= 8
        assert (await _post(client, protocol.CHAT_COMPLETIONS, chat))[1]["choices"] == \
            body["choices"]
    else:
        assert status == 400, body
        assert body["error"]["code"] == "chat_template_missing"
        assert body["error"]["param"] == "messages"


def test_llama31_uses_llama3_rope(tiny_zoo) -> None:
    config = json.loads((tiny_zoo.path("meta-llama/Meta-Llama-3.1-8B") / "config.json")
                        .read_text())
    rope = config["rope_parameters"]
    assert rope["rope_type"] == "llama3"
    assert rope["factor"] == 8.0 and rope["original_max_position_embeddings"] < \
        config["max_position_embeddings"]


@pytest.mark.parametrize(("model_id", "messages"), [
    # v0.1 and gemma refuse what their real templates refuse: roles out of turn,
    # and gemma a system message
    ("mistralai/Mistral-7B-Instruct-v0.1",
     [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]),
    ("google/gemma-2b-it",
     [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]),
])
async def test_template_refusals_are_400(engine_client, tiny_zoo, model_id, messages) -> None:
    client = await _family_client(engine_client, tiny_zoo, model_id)
    status, body = await _post(client, protocol.CHAT_COMPLETIONS, {"messages": messages})
    assert status == 400, body
    assert body["error"]["code"] == "chat_template_error"
    assert body["error"]["param"] == "messages"


async def test_system_messages_reach_mistral_v03_and_llama3(engine_client, tiny_zoo) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    for model_id in ("mistralai/Mistral-7B-Instruct-v0.3", "meta-llama/Meta-Llama-3-8B-Instruct"):
        client = await _family_client(engine_client, tiny_zoo, model_id)
        status, with_system = await _post(client, protocol.CHAT_COMPLETIONS,
                                          {"messages": messages, "max_tokens": 2})
        assert status == 200, with_system
        status, without = await _post(client, protocol.CHAT_COMPLETIONS,
                                      {"messages": messages[1:], "max_tokens": 2})
        assert status == 200, without
        assert with_system["usage"]["prompt_tokens"] > without["usage"]["prompt_tokens"]


# --- Llama Guard 2 -------------------------------------------------------------------

def test_the_guard_template_lists_the_policy(tiny_zoo) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_zoo.path(GUARD))
    prompt = str(tokenizer.apply_chat_template(
        [{"role": "user", "content": "how do I bake bread"},
         {"role": "assistant", "content": "with flour"}], tokenize=False))
    assert prompt.startswith("<|begin_of_text|>[INST] Task: Check if there is unsafe content "
                             "in 'Agent' messages")
    assert prompt.endswith("[/INST]")
    assert "User: how do I bake bread\n\nAgent: with flour" in prompt
    for code, name in GUARD_CATEGORIES.items():
        assert f"{code}: {name}." in prompt
    assert GUARD_CATEGORIES == GUARD_CODES


@pytest.mark.parametrize(("output", "verdict"), [
    ("safe", Verdict("safe")),
    ("  Safe\n", Verdict("safe")),
    ("unsafe\nS1", Verdict("unsafe", ("S1",))),
    ("unsafe\nS10,S2, s11", Verdict("unsafe", ("S10", "S2", "S11"))),
    ("unsafe S4", Verdict("unsafe", ("S4",))),
    ("unsafe\nS1,S1,S99,S0", Verdict("unsafe", ("S1",))),
    ("unsafe", Verdict("unsafe")),
    ("safety first", Verdict(UNPARSEABLE)),
    ("unsafely", Verdict(UNPARSEABLE)),
    ("", Verdict(UNPARSEABLE)),
    ("\ufffd\x0bhine", Verdict(UNPARSEABLE)),
])
def test_parse_verdict(output, verdict) -> None:
    assert parse_verdict(output) == verdict


def test_codes_map_to_openai_categories() -> None:
    result = moderation_result(Verdict("unsafe", ("S1", "S10")), 0.75, "unsafe\nS1,S10")
    assert result["flagged"] is True
    assert {c for c, on in result["categories"].items() if on} == \
        {"violence", "illicit/violent", "self-harm"}
    assert result["category_scores"]["violence"] == 0.75
    assert result["category_scores"]["hate"] == 0.0
    assert result["category_applied_input_types"]["self-harm"] == ["text"]
    assert result["llama_guard"]["names"] == ["Violent Crimes", "Self-Harm"]
    privacy = moderation_result(Verdict("unsafe", ("S6",)), 0.5, "unsafe\nS6")
    assert privacy["flagged"] is True and not any(privacy["categories"].values())
    garbage = moderation_result(Verdict(UNPARSEABLE), 0.5, "zz")
    assert garbage["flagged"] is False
    assert set(garbage["category_scores"].values()) == {0.0}


@pytest.fixture
async def guard(engine_client, tiny_zoo) -> Any:
    return await _family_client(engine_client, tiny_zoo, GUARD)


async def test_guard_moderations_shape(guard) -> None:
    inputs = ["how do I bake bread", "tell me a story", "x"]
    status, body = await _post(guard, protocol.MODERATIONS, {"input": inputs})
    assert status == 200, body
    assert body["id"].startswith("modr-") and body["model"] == "fam"
    assert len(body["results"]) == 3
    for result in body["results"]:
        assert isinstance(result["flagged"], bool)
        assert list(result["categories"]) == list(OPENAI_CATEGORIES)
        assert all(isinstance(v, bool) for v in result["categories"].values())
        assert list(result["category_scores"]) == list(OPENAI_CATEGORIES)
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0
                   for v in result["category_scores"].values())
        details = result["llama_guard"]
        assert details["verdict"] in {"safe", "unsafe", UNPARSEABLE}
        assert parse_verdict(details["output"]).verdict == details["verdict"]
        assert result["flagged"] == (details["verdict"] == "unsafe")
        assert 0.0 <= details["unsafe_probability"] <= 1.0
    usage = body["usage"]
    assert usage["prompt_tokens"] > 3 * 500  # the policy text is in every prompt
    status, again = await _post(guard, protocol.MODERATIONS, {"input": inputs})
    assert status == 200
    assert again["results"] == body["results"]
    status, one = await _post(guard, protocol.MODERATIONS, {"input": inputs[0]})
    assert status == 200
    assert one["results"] == body["results"][:1]


async def test_guard_chat_is_the_verdict_as_text(guard) -> None:
    chat = {"messages": [{"role": "user", "content": "how do I bake bread"}],
            "temperature": 0, "max_tokens": 48}
    status, body = await _post(guard, protocol.CHAT_COMPLETIONS, chat)
    assert status == 200, body
    assert body["object"] == "chat.completion"
    text = body["choices"][0]["message"]["content"]
    status, moderated = await _post(guard, protocol.MODERATIONS, {"input": "how do I bake bread"})
    assert status == 200
    assert moderated["results"][0]["llama_guard"]["output"] == text


@pytest.mark.parametrize(("route", "body", "status", "param", "code"), [
    (protocol.COMPLETIONS, {"prompt": "x"}, 400, None, "unsupported_route"),
    (protocol.MODERATIONS, {"input": []}, 400, "input", None),
    (protocol.MODERATIONS, {"input": ["x"] * 33}, 400, "input", None),
    (protocol.MODERATIONS, {"input": 5}, 400, "input", None),
    (protocol.MODERATIONS, {"input": "word " * 3000}, 400, "input", "context_length_exceeded"),
    (protocol.MODERATIONS, {"input": "word " * 300_000}, 400, "input",
     "context_length_exceeded"),
])
async def test_guard_bad_input(guard, route, body, status, param, code) -> None:
    got, answer = await _post(guard, route, body)
    assert got == status, answer
    assert answer["error"]["param"] == param
    if code:
        assert answer["error"]["code"] == code


async def test_moderations_on_a_text_model_is_refused(engine_client, tiny_zoo) -> None:
    client = await _family_client(engine_client, tiny_zoo, "facebook/opt-125m")
    status, body = await _post(client, protocol.MODERATIONS, {"input": "x"})
    assert status == 400
    assert body["error"]["code"] == "unsupported_route"
