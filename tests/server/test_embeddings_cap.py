"""`server.embedding_max_tokens` reaches the engine: a request over it is a 400 on
`input`, found before any embedding is made; one under it is answered."""

from __future__ import annotations

from server.app import create_app
from server.auth import TOKEN_ENV
from server.config import load_config
from tests.conftest import TinyModels
from tests.helpers import ADMIN_TOKEN, AUTH, write_config
from tests.server.conftest import supervisor_of, wait_for
from tests.server.test_router_errors import assert_error


async def test_the_configured_token_budget_caps_an_embeddings_request(
        aiohttp_client, tmp_path, monkeypatch, tiny_models) -> None:
    monkeypatch.setenv(TOKEN_ENV, ADMIN_TOKEN)
    path = write_config(tmp_path / "config.toml", state_dir=tmp_path / "state",
                        models_dir=tiny_models.models_dir, deployments=[
                            {"name": "embed", "model": TinyModels.MINILM_ID,
                             "hardware": "micro"}])
    path.write_text(path.read_text().replace("[server]\n",
                                             "[server]\nembedding_max_tokens = 12\n", 1))
    api = await aiohttp_client(create_app(load_config(path)), headers=AUTH)
    dep = supervisor_of(api).get("embed")
    assert dep is not None
    await wait_for(lambda: dep.ready, 120)

    resp = await api.post("/v1/embeddings", json={"model": "embed", "input": ["a cat"] * 2})
    assert resp.status == 200  # 2 x (3-4 tokens with the special ones): under 12
    assert len((await resp.json())["data"]) == 2
    resp = await api.post("/v1/embeddings", json={"model": "embed", "input": ["a cat"] * 5})
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, code="max_tokens_per_request", param="input")
    assert "12" in body["error"]["message"]
    resp = await api.post("/v1/embeddings", json={"model": "embed", "input": "a cat"})
    assert resp.status == 200  # the engine lived through the refusal
