"""Users, API keys and who may call what, against the real app and store."""

from __future__ import annotations

import os
import stat

from server.auth import TOKEN_ENV
from tests.server.conftest import supervisor_of, wait_for
from tests.server.test_router_errors import assert_error

CHAT = "berth-demo/tiny-random-llama-chat"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def new_user_key(api, user: str) -> str:
    resp = await api.post("/api/users", json={"name": user})
    assert resp.status in (201, 409)
    resp = await api.post(f"/api/users/{user}/keys", json={"name": "laptop"})
    assert resp.status == 201
    body = await resp.json()
    assert body["key"].startswith("bk_") and body["user"] == user
    return body["key"]


async def test_no_key_or_a_bad_one_is_401_and_healthz_is_open(make_client):
    api = await make_client(headers={})
    for path in ("/v1/models", "/api/deployments", "/openapi.json"):
        resp = await api.get(path)
        assert resp.status == 401
        assert_error(await resp.json(), code="missing_api_key")
        resp = await api.get(path, headers=bearer("bk_nope_nope"))
        assert resp.status == 401
        assert_error(await resp.json(), code="invalid_api_key")
    health = await api.get("/healthz")
    assert health.status == 200
    assert await health.json() == {"status": "ok"}  # nothing about anyone's deployments
    resp = await api.get("/v1/models", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert resp.status == 401
    assert_error(await resp.json(), code="invalid_api_key")


async def test_users_see_and_call_only_their_own_endpoints(make_client, tiny_models):
    api = await make_client(models_dir=tiny_models.models_dir)
    alice, bob = await new_user_key(api, "alice"), await new_user_key(api, "bob")
    for name, owner in (("a-chat", "alice"), ("b-chat", "bob")):
        resp = await api.post("/api/deployments", json={
            "name": name, "model": CHAT, "hardware": "micro", "owner": owner})
        assert resp.status == 201
    sup = supervisor_of(api)
    await wait_for(lambda: sup.get("a-chat").state == "ready", 90)

    models = await (await api.get("/v1/models", headers=bearer(alice))).json()
    assert [m["id"] for m in models["data"]] == ["a-chat"]
    mine = await api.get("/v1/models/a-chat", headers=bearer(alice))
    assert (mine.status, (await mine.json())["id"]) == (200, "a-chat")
    body = {"prompt": "hi", "max_tokens": 2}
    ok = await api.post("/v1/completions", json={"model": "a-chat", **body},
                        headers=bearer(alice))
    assert ok.status == 200
    # bob's endpoint does not exist as far as alice can tell
    for resp in (await api.post("/v1/completions", json={"model": "b-chat", **body},
                                headers=bearer(alice)),
                 await api.post("/endpoints/b-chat/v1/completions", json=body,
                                headers=bearer(alice)),
                 await api.get("/endpoints/b-chat/v1/models", headers=bearer(alice)),
                 await api.get("/v1/models/b-chat", headers=bearer(alice))):
        assert resp.status == 404
        assert_error(await resp.json(), code="model_not_found")
    # and admin routes are not for users
    for method, path in (("GET", "/api/deployments"), ("POST", "/api/users"),
                         ("DELETE", "/api/keys/x"), ("GET", "/api/hardware")):
        resp = await api.request(method, path, headers=bearer(bob), json={})
        assert resp.status == 403
        assert_error(await resp.json(), code="admin_only")
    # the admin token sees everything
    models = await (await api.get("/v1/models")).json()
    assert sorted(m["id"] for m in models["data"]) == ["a-chat", "b-chat"]


async def test_a_revoked_key_is_refused_on_the_next_request(make_client):
    api = await make_client()
    key = await new_user_key(api, "carol")
    assert (await api.get("/v1/models", headers=bearer(key))).status == 200
    key_id = key.split("_")[1]
    listed = await (await api.get("/api/keys")).json()
    assert [k["id"] for k in listed["data"]] == [key_id]
    assert "key" not in listed["data"][0] and "hash" not in listed["data"][0]
    assert (await api.delete(f"/api/keys/{key_id}")).status == 200
    resp = await api.get("/v1/models", headers=bearer(key))
    assert resp.status == 401
    assert (await api.delete(f"/api/keys/{key_id}")).status == 404


async def test_user_and_key_errors(make_client):
    api = await make_client()
    assert (await api.post("/api/users", json={"name": "dave"})).status == 201
    resp = await api.post("/api/users", json={"name": "dave"})
    assert resp.status == 409
    resp = await api.post("/api/users", json={"name": "Dave/../x"})
    assert resp.status == 400
    assert_error(await resp.json(), param="name")
    resp = await api.post("/api/users/nobody/keys")
    assert resp.status == 404
    assert_error(await resp.json(), code="user_not_found")


async def test_state_files_have_private_modes_and_a_token_is_generated(make_client,
                                                                       monkeypatch, tmp_path):
    monkeypatch.delenv(TOKEN_ENV)
    api = await make_client(headers={})
    state = tmp_path / "state"
    token_file = state / "admin.token"
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state / "berth.db").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32
    assert (await api.get("/api/deployments", headers=bearer(token))).status == 200
    assert (await api.get("/api/deployments", headers=bearer(token + "x"))).status == 401


async def test_nobody_can_become_the_admin_owner(make_client, tiny_models):
    api = await make_client(models_dir=tiny_models.models_dir, deployments=[
        {"name": "chat", "model": CHAT, "hardware": "micro"}])  # owned by "admin"
    for reserved in ("admin", "root"):
        resp = await api.post("/api/users", json={"name": reserved})
        assert resp.status == 400
        assert_error(await resp.json(), code="reserved_name", param="name")
    resp = await api.post("/api/deployments", json={
        "name": "x", "model": CHAT, "hardware": "micro", "owner": "Nobody/../x"})
    assert resp.status == 404
    assert_error(await resp.json(), code="user_not_found", param="owner")


def test_undecodable_credentials_are_just_wrong():
    from server.auth import Keyring

    ring = Keyring("token")
    assert ring.who("bk_\udcff\udcfe_x") is None  # what aiohttp makes of bytes \xff\xfe
    assert ring.who("token\udce9") is None
    assert ring.who("token") is not None
