"""The embeddings engine on the real all-MiniLM-L6-v2 weights."""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import pytest

from engines import protocol
from engines.embeddings import folder_settings
from engines.protocol import Task

from .conftest import make_spec


@pytest.fixture
async def embed(engine_client, tiny_models) -> Any:
    return await engine_client(make_spec(tiny_models.minilm, Task.EMBEDDINGS, name="embed"))


async def _embed(client: Any, **body: Any) -> tuple[int, dict[str, Any]]:
    async with client.post(protocol.EMBEDDINGS, json=body) as resp:
        return resp.status, await resp.json()


def test_minilm_folder_asks_for_mean_pooling_and_normalisation(tiny_models) -> None:
    settings = folder_settings(tiny_models.minilm)
    assert settings == {"pooling": "mean", "normalize": True, "max_seq_length": 256}


async def test_similar_sentences_are_closer(embed) -> None:
    texts = ["a cat sits on the mat", "a kitten rests on a rug", "stock markets fell sharply today"]
    status, body = await _embed(embed, input=texts)
    assert status == 200, body
    assert body["object"] == "list"
    assert body["model"] == "embed"
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" for d in body["data"])
    cat, kitten, stocks = (np.array(d["embedding"]) for d in body["data"])
    assert cat.shape == (384,)
    assert math.isclose(float(np.linalg.norm(cat)), 1.0, abs_tol=1e-4)  # normalised
    close, far = float(cat @ kitten), float(cat @ stocks)
    assert close > 0.5 > 0.2 > far
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 3 * 2


async def test_base64_is_the_same_little_endian_float32(embed) -> None:
    _, floats = await _embed(embed, input="hello world")
    status, encoded = await _embed(embed, input="hello world", encoding_format="base64")
    assert status == 200
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    decoded = np.frombuffer(raw, dtype="<f4")
    np.testing.assert_allclose(decoded, np.array(floats["data"][0]["embedding"]), rtol=1e-6)


async def test_token_arrays_embed_like_their_text(embed, tiny_models) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_models.minilm / "tokenizer.json"))
    tok.no_padding()  # the shipped tokenizer.json pads to 128
    ids = tok.encode("hello world", add_special_tokens=False).ids
    _, text = await _embed(embed, input="hello world")
    status, from_ids = await _embed(embed, input=ids)
    assert status == 200
    np.testing.assert_allclose(
        from_ids["data"][0]["embedding"], text["data"][0]["embedding"], atol=1e-5
    )
    assert from_ids["usage"]["prompt_tokens"] == len(ids) + 2  # [CLS] ... [SEP]
    status, many = await _embed(embed, input=[ids, ids[:1]])
    assert status == 200
    assert len(many["data"]) == 2


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"input": "x", "dimensions": 128}, "unsupported_value", "dimensions"),
        ({"input": "word " * 300}, "context_length_exceeded", "input"),
        ({"input": [[1, 2], []]}, "invalid_value", "input"),
        ({"input": [10**7]}, "invalid_value", "input"),
        ({"input": 5}, "invalid_value", "input"),
        ({"input": "x", "encoding_format": "hex"}, "invalid_value", "encoding_format"),
        ({"input": [None]}, "invalid_value", "input.0"),
    ],
)
async def test_bad_embedding_requests(embed, body, code, param) -> None:
    status, out = await _embed(embed, **body)
    assert status == 400, out
    assert out["error"]["code"] == code
    assert out["error"]["param"] == param
    assert "NoneType" not in out["error"]["message"]


async def test_a_request_over_the_token_budget_is_refused(engine_client, tiny_models) -> None:
    spec = make_spec(tiny_models.minilm, Task.EMBEDDINGS, name="embed", embedding_max_tokens=40)
    client = await engine_client(spec)
    twelve = "one two three four five six seven eight nine ten"  # 10 words + [CLS] [SEP]
    status, ok = await _embed(client, input=[twelve] * 3)
    assert status == 200, ok
    assert ok["usage"]["prompt_tokens"] == 36
    for body in ({"input": [twelve] * 4},  # 48 tokens counted as they are tokenized
                 {"input": [[1000] * 30, [1000] * 30]}):  # arrays: known before any work
        status, out = await _embed(client, **body)
        assert status == 400, out
        error = out["error"]
        assert error["code"] == "max_tokens_per_request" and error["param"] == "input"
        assert "at most 40 tokens per request" in error["message"]
    status, _ = await _embed(client, input=twelve)  # the engine answers on
    assert status == 200


async def test_the_default_budget_refuses_2048_long_inputs_at_once(embed) -> None:
    # 2048 inputs of ~250 tokens each (~510k tokens) held a 1-CPU engine for minutes;
    # the default budget (OpenAI's 300k) refuses them before embedding any
    long = " ".join(f"w{i % 7}" for i in range(120))  # ~250 tokens, under 256 each
    status, out = await _embed(embed, input=[long] * 2048)
    assert status == 400, out
    assert out["error"]["code"] == "max_tokens_per_request"
    assert "at most 300000 tokens per request" in out["error"]["message"]


async def test_dimensions_equal_to_the_model_size_is_fine(embed) -> None:
    status, _ = await _embed(embed, input="x", dimensions=384)
    assert status == 200
    async with embed.get(protocol.HEALTH) as resp:
        assert (await resp.json())["context_length"] == 256
