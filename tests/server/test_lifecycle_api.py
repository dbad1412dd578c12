"""The admin API's create/stop/start/restart/delete, in-process with real engines."""

from __future__ import annotations

import asyncio
import os
import re

import pytest

from server import keys
from tests.server.conftest import supervisor_of, wait_for
from tests.server.test_router_errors import assert_error

CHAT = "berth-demo/tiny-random-llama-chat"


@pytest.fixture
async def api(make_client, tiny_models):
    return await make_client(models_dir=tiny_models.models_dir)


async def create(api, **body):
    return await api.post("/api/deployments", json={"hardware": "micro", "model": CHAT, **body})


@pytest.mark.parametrize("name", ["", "Chat", "a/b", "..", "../x", "a b", "chat_1", "é",
                                  "-chat", "chat-", "a" * 64, "a\u0000b", "chat\n"])
async def test_bad_names_are_400_with_the_pattern(api, name):
    resp = await create(api, name=name)
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, code="invalid_name", param="name")
    assert "[a-z0-9]" in body["error"]["message"]


@pytest.mark.parametrize(("body", "param"), [
    ({"model": CHAT, "hardware": "micro"}, "name"),
    ({"name": 5, "model": CHAT, "hardware": "micro"}, "name"),
    ({"name": "x", "model": CHAT, "hardware": "micro", "colour": "red"}, "colour"),
    ({"name": "x", "hardware": "micro"}, "model"),
])
async def test_malformed_bodies_are_400(api, body, param):
    resp = await api.post("/api/deployments", json=body)
    assert resp.status == 400
    assert_error(await resp.json(), param=param)
    resp = await api.post("/api/deployments", data=b"[1]")
    assert resp.status == 400


@pytest.mark.parametrize("content_type", ["application/json; charset=foobar",
                                          "application/json; charset=latin-1", "text/plain"])
async def test_json_is_read_as_utf8_whatever_charset_the_header_names(api, content_type):
    body = b'{"name": "caf\xc3\xa9", "model": "%s", "hardware": "micro"}' % CHAT.encode()
    resp = await api.post("/api/deployments", data=body,
                          headers={"Content-Type": content_type})
    assert resp.status == 400  # the name, read as UTF-8, breaks the name rule: not a 500
    assert_error(await resp.json(), param="name")
    for bad in (b'{"name": 1', b'{"name": NaN}'):
        resp = await api.post("/api/users", data=bad, headers={
            "Content-Type": "application/json; charset=foobar"})
        assert resp.status == 400
        assert_error(await resp.json(), code="invalid_json")


async def test_unknown_tier_lists_the_tiers(api):
    resp = await create(api, name="x", hardware="gigantic")
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, code="unknown_hardware")
    for tier in ("micro", "small", "medium", "large", "a10"):
        assert tier in body["error"]["message"]


async def test_unknown_model_lists_close_matches(api):
    resp = await create(api, name="x", model="facebook/opt-12m")
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, code="model_not_found")
    assert "facebook/opt-125m" in body["error"]["message"]


async def test_too_big_for_the_tier_names_the_smallest_that_fits(api):
    resp = await create(api, name="x", model="meta-llama/Meta-Llama-3-8B-Instruct")
    assert resp.status == 422
    body = await resp.json()
    assert_error(body, code="insufficient_memory")
    assert "a10" in body["error"]["message"] or "large" in body["error"]["message"]
    assert "8.03B parameters" in body["error"]["message"]
    assert "tier micro has 2 GiB" in body["error"]["message"]


async def test_too_big_for_a_tiny_tier_says_it_in_units_a_person_reads(make_client,
                                                                       tiny_models):
    api = await make_client(models_dir=tiny_models.models_dir, tiers={"nano": {
        "cpus": 1, "memory": "200MiB", "price_per_hour": "0.01"}})
    resp = await api.post("/api/deployments", json={"name": "x", "model": CHAT,
                                                    "hardware": "nano"})
    assert resp.status == 422
    message = (await resp.json())["error"]["message"]
    assert re.search(r"needs about \d+ MiB \(\d+(\.\d)?[KM]? parameters as \w+\); "
                     r"tier nano has 200 MiB", message), message


async def test_missing_weights_say_how_to_pull_them(api):
    resp = await create(api, name="x", model="facebook/opt-125m")
    assert resp.status == 422
    body = await resp.json()
    assert_error(body, code="weights_missing")
    assert "berth pull facebook/opt-125m" in body["error"]["message"]


async def test_create_stop_start_restart_delete(api):
    resp = await create(api, name="chat")
    assert resp.status == 201
    dep = await resp.json()
    assert (dep["name"], dep["model"], dep["hardware"], dep["owner"]) == (
        "chat", CHAT, "micro", "admin")
    sup = supervisor_of(api)
    await wait_for(lambda: sup.get("chat").state == "ready", 60)
    first_pid = sup.get("chat").pid
    live = await (await api.get("/api/deployments/chat")).json()
    assert live["usage"]["memory_bytes"] > 50 * 1024 * 1024  # torch + the model, resident
    assert live["usage"]["cpu_percent"] >= 0
    assert live["usage"]["memory_limit_bytes"] == 2 * 1024**3

    resp = await create(api, name="chat")
    assert resp.status == 409
    assert_error(await resp.json(), code="name_taken")

    stopped = await (await api.post("/api/deployments/chat/stop")).json()
    assert (stopped["status"], stopped["pid"]) == ("stopped", None)
    resp = await api.post("/endpoints/chat/v1/completions", json={"prompt": "x"})
    assert resp.status == 503
    assert_error(await resp.json(), code="deployment_stopped")

    started = await (await api.post("/api/deployments/chat/start")).json()
    assert started["status"] in ("pending", "starting", "loading")
    await wait_for(lambda: sup.get("chat").state == "ready", 60)
    second_pid = sup.get("chat").pid
    assert second_pid != first_pid

    await api.post("/api/deployments/chat/restart")
    await wait_for(lambda: sup.get("chat").state == "ready", 60)
    assert sup.get("chat").pid not in (first_pid, second_pid)
    resp = await api.post("/endpoints/chat/v1/completions",
                          json={"prompt": "x", "max_tokens": 2})
    assert resp.status == 200

    dep_id = sup.get("chat").id
    resp = await api.delete("/api/deployments/chat")
    assert resp.status == 200
    assert (await resp.json())["status"] == "deleted"
    assert (await api.get("/api/deployments/chat")).status == 404
    assert (await api.post("/api/deployments/chat/stop")).status == 404
    resp = await api.post("/endpoints/chat/v1/completions", json={"prompt": "x"})
    assert resp.status == 404
    # the history is kept in the store
    events = await api.app[keys.STORE].events(dep_id)
    assert [e.status for e in events][:2] == ["pending", "starting"]
    assert (events[-1].status, events[-1].reason) == ("stopped", "deleted")


async def test_two_simultaneous_creates_give_one_201_and_one_409(api):
    a, b = await asyncio.gather(create(api, name="twin"), create(api, name="twin"))
    assert sorted([a.status, b.status]) == [201, 409]
    sup = supervisor_of(api)
    assert [d.name for d in sup.all()] == ["twin"]
    await wait_for(lambda: sup.get("twin").pid is not None, 60)


async def test_delete_while_loading_ends_deleted(api):
    assert (await create(api, name="brief")).status == 201
    sup = supervisor_of(api)
    dep = sup.get("brief")
    await wait_for(lambda: dep.state in ("starting", "loading"), 30)
    pid = dep.pid
    resp = await api.delete("/api/deployments/brief")
    assert resp.status == 200
    assert sup.get("brief") is None
    await asyncio.sleep(1.5)  # nothing comes back
    assert sup.get("brief") is None
    assert dep.run_task is None and dep.pid is None
    if pid is not None:
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)


def _zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] == "Z"


async def test_delete_then_immediate_recreate_works_every_time(api):
    sup = supervisor_of(api)
    for _ in range(3):
        assert (await create(api, name="again")).status == 201
        assert (await api.delete("/api/deployments/again")).status == 200
    assert (await create(api, name="again")).status == 201
    await wait_for(lambda: sup.get("again").state == "ready", 60)
    resp = await api.post("/endpoints/again/v1/completions",
                          json={"prompt": "x", "max_tokens": 2})
    assert resp.status == 200


async def test_openapi_describes_every_registered_route(api):
    spec = await (await api.get("/openapi.json")).json()
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    for resource in api.app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        for route in resource:
            if route.method == "HEAD":
                continue
            if path.endswith("{route}"):
                base = path.removesuffix("{route}")
                expected = {(route.method, base + r) for r in
                            ("chat/completions", "completions", "embeddings")}
                assert expected <= documented, path
            else:
                assert (route.method, path) in documented, (route.method, path)
    body = spec["paths"]["/api/deployments"]["post"]["requestBody"]
    assert "name" in body["content"]["application/json"]["schema"]["properties"]


async def test_delete_lets_an_in_flight_stream_finish(api):
    assert (await create(api, name="busy")).status == 201
    sup = supervisor_of(api)
    await wait_for(lambda: sup.get("busy").state == "ready", 60)
    body = {"prompt": "once", "max_tokens": 300, "temperature": 0, "stream": True}
    async with api.post("/endpoints/busy/v1/completions", json=body) as stream:
        assert stream.status == 200
        first = await stream.content.readuntil(b"\n\n")
        assert first.startswith(b"data: ")
        deleting = asyncio.create_task(api.delete("/api/deployments/busy"))
        await wait_for(lambda: sup.get("busy") is None or sup.get("busy").deleting, 10)
        # while it drains, new requests are refused; the open stream goes on
        refused = await api.post("/endpoints/busy/v1/completions", json={"prompt": "x"})
        assert refused.status in (503, 404)
        rest = await stream.read()
    assert rest.rstrip().endswith(b"data: [DONE]")
    assert (await deleting).status == 200
    assert sup.get("busy") is None


def _engines_named(name: str) -> list[int]:
    """Engine processes of this test process serving deployment `name`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat[0] == "Z" or b"engines" not in argv:
            continue
        spec = next((a for a in argv if a.startswith(b"{")), b"")
        if f'"name": "{name}"'.encode() in spec and int(stat[1]) == os.getpid():
            pids.append(int(entry))
    return pids


async def test_a_delete_racing_a_create_leaves_no_ghost_engine(api):
    sup = supervisor_of(api)
    for round_ in range(3):
        name = f"race{round_}"

        async def deletes(name: str = name) -> bool:
            for _ in range(100):
                if (await api.delete(f"/api/deployments/{name}")).status == 200:
                    return True
                await asyncio.sleep(0)
            return False

        created, *deleted = await asyncio.gather(create(api, name=name), deletes(), deletes())
        assert created.status == 201
        if not any(deleted):  # the create won outright: delete it now
            assert (await api.delete(f"/api/deployments/{name}")).status == 200
        assert sup.get(name) is None
        await asyncio.sleep(0.5)
        assert _engines_named(name) == []
        assert (await api.get(f"/api/deployments/{name}")).status == 404
