"""The official OpenAI client parses what the engines answer."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from engines.protocol import Task

from .conftest import make_spec


def _sdk(client: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0)


async def test_chat_and_completions_through_the_sdk(chat) -> None:
    async with _sdk(chat) as sdk:
        answer = await sdk.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=5, temperature=0
        )
        assert answer.choices[0].message.role == "assistant"
        assert answer.usage is not None and answer.usage.completion_tokens <= 5
        text = ""
        stream = await sdk.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=5,
            temperature=0,
            stream=True,
        )
        async for chunk in stream:
            text += chunk.choices[0].delta.content or ""
        assert text == answer.choices[0].message.content
        completion = await sdk.completions.create(
            model="chat", prompt="Hello", max_tokens=3, temperature=0
        )
        assert completion.choices[0].finish_reason in {"stop", "length"}
        with pytest.raises(openai.BadRequestError) as info:
            await sdk.completions.create(model="chat", prompt="Hello", max_tokens=100_000)
        assert info.value.code == "context_length_exceeded"


async def test_embeddings_through_the_sdk(engine_client, tiny_models) -> None:
    client = await engine_client(make_spec(tiny_models.minilm, Task.EMBEDDINGS, name="embed"))
    async with _sdk(client) as sdk:
        # the SDK asks for base64 by default and decodes it itself
        out = await sdk.embeddings.create(model="embed", input=["hello", "world"])
    assert [len(d.embedding) for d in out.data] == [384, 384]
    assert out.usage.prompt_tokens == 6
