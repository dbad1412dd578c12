"""Bad input and unknown or unready endpoints, answered by the router itself."""

from __future__ import annotations

import io

import pytest

from server import keys
from tests.server.conftest import supervisor_of, wait_for

CHAT = "/v1/chat/completions"


def assert_error(body: dict, *, code: str | None = None, param: str | None = None) -> None:
    err = body["error"]
    assert set(err) == {"message", "type", "code", "param"}
    assert err["message"]
    assert isinstance(err["code"], str) and err["code"]  # never null: clients branch on it
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param


@pytest.mark.parametrize(("body", "code"), [
    (b"[]", "invalid_body"),
    (b"null", "invalid_body"),
    (b"5", "invalid_body"),
    (b'"text"', "invalid_body"),
    (b'{"model": "chat", "messages": [', "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
    (b'{"model": "chat", "messages": [], "temperature": NaN}', "invalid_json"),
    (b'{"model": "chat", "messages": [], "max_tokens": Infinity}', "invalid_json"),
    (b"", "invalid_json"),
    (b"[" * 200_000 + b"]" * 200_000, "invalid_json"),  # deeper than any parser recurses
])
async def test_body_not_a_json_object_is_400(make_client, body, code):
    client = await make_client()
    resp = await client.post(CHAT, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    body_json = await resp.json()
    assert_error(body_json, code=code)
    assert "NoneType" not in body_json["error"]["message"]  # JSON's words: "null"


@pytest.mark.parametrize(("path", "body", "param"), [
    (CHAT, {"model": "chat", "messages": "hi"}, "messages"),
    (CHAT, {"model": "chat", "messages": []}, "messages"),
    (CHAT, {"model": "chat", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": -1}, "max_tokens"),
    (CHAT, {"model": "chat", "messages": [{"role": "wizard", "content": "hi"}]},
     "messages.0.role"),
    (CHAT, {"model": "chat", "messages": [{"role": "user", "content": 5}]},
     "messages.0.content"),
    (CHAT, {"model": "chat", "messages": [{"role": "user", "content": "x"}],
            "temperature": "hot"}, "temperature"),
    (CHAT, {"model": "chat", "messages": [{"role": "user", "content": "x"}],
            "stream": "yes"}, "stream"),
    (CHAT, {"model": "chat", "messages": [{"role": "user", "content": "x"}],
            "stream_options": {"include_usage": True}}, "stream_options"),
    (CHAT, {"model": "chat", "messages": [{"role": "user", "content": "x"}],
            "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    (CHAT, {"model": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
    (CHAT, {"messages": [{"role": "user", "content": "x"}]}, "model"),
    ("/v1/completions", {"model": "chat"}, "prompt"),
    ("/v1/completions", {"model": "chat", "prompt": "x", "n": 0}, "n"),
    ("/v1/embeddings", {"model": "embed", "input": []}, "input"),
    ("/v1/embeddings", {"model": "embed", "input": [1.5]}, "input.0"),
    ("/v1/embeddings", {"model": "embed", "input": "\ud800"}, "input"),
    (CHAT, {"model": "chat", "messages": [{"role": "user", "content": "\udfff"}]},
     "messages.0.content"),
    (CHAT, {"model": "chat", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
     "messages.0.content.0.text"),
    (CHAT, {"model": "chat", "messages": [{"role": "user", "content": [
        {"type": "input_audio"}]}]}, "messages.0.content.0"),
    ("/v1/completions", {"model": "chat", "prompt": "x", "seed": 2**64}, "seed"),
    ("/v1/completions", {"model": "chat", "prompt": "x", "seed": -(10**30)}, "seed"),
    ("/v1/completions", {"model": "chat", "prompt": "x", "logprobs": 3}, "logprobs"),
    ("/v1/completions", {"model": "chat", "prompt": "x", "echo": True}, "echo"),
    (CHAT, {"model": "chat", "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    (CHAT, {"model": "chat", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"}}, "response_format"),
])
async def test_wrong_types_are_400_naming_the_param(make_client, path, body, param):
    client = await make_client()
    resp = await client.post(path, json=body)
    assert resp.status == 400, await resp.text()
    assert_error(await resp.json(), param=param)


async def test_unknown_endpoint_is_404_model_not_found(make_client):
    client = await make_client()
    resp = await client.post(CHAT, json={"model": "nope",
                                         "messages": [{"role": "user", "content": "x"}]})
    assert resp.status == 404
    assert_error(await resp.json(), code="model_not_found", param="model")
    resp = await client.post("/endpoints/nope/v1/completions", json={"prompt": "x"})
    assert resp.status == 404
    assert_error(await resp.json(), code="model_not_found")


async def test_unknown_routes_and_methods_answer_json(make_client):
    client = await make_client()
    resp = await client.get("/v1/nothing-here")
    assert resp.status == 404
    assert_error(await resp.json(), code="not_found")
    resp = await client.get(CHAT)
    assert resp.status == 405
    assert_error(await resp.json(), code="method_not_allowed")


async def test_body_over_the_limit_is_413_json(make_client):
    client = await make_client()
    limit = client.app[keys.CONFIG].server.max_body_bytes
    big = b'{"model": "chat", "prompt": "' + b"x" * (limit + 1024 * 1024) + b'"}'
    # with a Content-Length: refused before the body is read
    resp = await client.post("/v1/completions", data=io.BytesIO(big),
                             headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert_error(await resp.json(), code="request_too_large")

    async def chunks():  # chunked, no length: refused once the limit is crossed
        for i in range(0, len(big), 1 << 20):
            yield big[i:i + (1 << 20)]

    resp = await client.post("/v1/completions", data=chunks(),
                             headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert_error(await resp.json(), code="request_too_large")


async def test_deployment_without_weights_fails_and_answers_503(make_client):
    client = await make_client(deployments=[
        {"name": "ghost", "model": "nobody/missing-model", "hardware": "micro",
         "task": "text"}])
    sup = supervisor_of(client)
    await wait_for(lambda: sup.get("ghost").state == "failed")
    resp = await client.post("/endpoints/ghost/v1/completions", json={"prompt": "x"})
    assert resp.status == 503
    assert_error(await resp.json(), code="deployment_failed")
    # a route the deployment's task does not serve is 400, naming those it serves
    resp = await client.post("/v1/embeddings", json={"model": "ghost", "input": "x"})
    assert resp.status == 400
    body = await resp.json()
    assert "/v1/completions" in body["error"]["message"]

    resp = await client.get("/api/deployments/ghost")
    dep = await resp.json()
    assert dep["status"] == "failed"
    assert "weights not found" in dep["reason"]
    assert dep["pid"] is None
    events = (await (await client.get("/api/deployments/ghost/events")).json())["data"]
    assert [e["status"] for e in events] == ["pending", "failed"]


async def test_admin_lists_deployments(make_client):
    client = await make_client(deployments=[
        {"name": "ghost", "model": "nobody/missing-model", "hardware": "small"}])
    body = await (await client.get("/api/deployments")).json()
    assert [d["name"] for d in body["data"]] == ["ghost"]
    dep = body["data"][0]
    for key in ("name", "model", "hardware", "status", "reason", "pid", "restarts"):
        assert key in dep
    assert dep["hardware"] == "small"
    resp = await client.get("/api/deployments/unknown")
    assert resp.status == 404
    assert_error(await resp.json(), code="deployment_not_found")
    resp = await client.get("/api/deployments/ghost/logs?tail=abc")
    assert resp.status == 400
    assert_error(await resp.json(), param="tail", code="invalid_value")
    resp = await client.get("/api/deployments/ghost/logs?offset=-5")
    assert resp.status == 400
    assert_error(await resp.json(), param="offset", code="invalid_value")


async def test_a_config_deployment_cannot_be_deleted_by_the_api(make_client):
    client = await make_client(deployments=[
        {"name": "ghost", "model": "nobody/missing-model", "hardware": "micro"}])
    resp = await client.delete("/api/deployments/ghost")
    assert resp.status == 409
    body = await resp.json()
    assert_error(body, code="defined_in_config")
    assert "config.toml" in body["error"]["message"]
    dep = await (await client.get("/api/deployments/ghost")).json()
    assert dep["source"] == "config"


@pytest.mark.parametrize(("body", "message"), [
    ({"model": "embed", "input": None}, "input: must be a string or an array"),
    ({"model": "embed", "input": 5}, "input: must be a string or an array"),
    ({"model": "embed", "input": ""}, "input: must not be empty"),
    ({"model": "embed", "input": []}, "input: must not be empty"),
])
async def test_a_value_of_no_allowed_type_names_every_allowed_type(make_client, body, message):
    client = await make_client()
    resp = await client.post("/v1/embeddings", json=body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert (error["message"], error["param"]) == (message, "input")
