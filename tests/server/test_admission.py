"""Admission control through the API: a node of 2 CPUs holds one `small` deployment."""

from __future__ import annotations

from tests.server.conftest import supervisor_of, wait_for
from tests.server.test_router_errors import assert_error

CHAT = "berth-demo/tiny-random-llama-chat"


async def test_second_small_on_a_two_cpu_node_is_409_naming_what_is_free(make_client,
                                                                          tiny_models):
    api = await make_client(models_dir=tiny_models.models_dir,
                            node={"cpus": 2, "memory": "8GiB", "gpus": 0})
    body = {"model": CHAT, "hardware": "small"}
    assert (await api.post("/api/deployments", json={"name": "one", **body})).status == 201

    resp = await api.post("/api/deployments", json={"name": "two", **body})
    assert resp.status == 409
    err = (await resp.json())["error"]
    assert_error({"error": err}, code="insufficient_capacity")
    assert "needs 2 CPU, 4 GiB" in err["message"]
    assert "0 CPU, 4.0 GiB free" in err["message"]

    hw = await (await api.get("/api/hardware")).json()
    assert hw["capacity"]["cpus"] == 2
    assert hw["allocated"]["cpus"] == 2 and hw["free"]["cpus"] == 0
    fits = {t["name"]: t["fits_free"] for t in hw["tiers"]}
    assert fits["small"] is False and fits["micro"] is False
    assert hw["deployments"]["one"]["hardware"] == "small"
    assert hw["slices"]["driver"] in ("cgroup-v1", "cgroup-v2", "none")

    # a person stops `one`: its share goes back, `two` fits, and `one` cannot start again
    sup = supervisor_of(api)
    await wait_for(lambda: sup.get("one").state in ("loading", "ready"), 60)
    assert (await api.post("/api/deployments/one/stop")).status == 200
    assert (await api.post("/api/deployments", json={"name": "two", **body})).status == 201
    resp = await api.post("/api/deployments/one/start")
    assert resp.status == 409
    assert_error(await resp.json(), code="insufficient_capacity")
    assert sup.get("one").state == "stopped"
    # deleting `two` frees the node again
    assert (await api.delete("/api/deployments/two")).status == 200
    assert (await api.post("/api/deployments/one/start")).status == 200


async def test_a_gpu_tier_on_a_node_without_gpus_is_422_never_fits(make_client, tiny_models):
    api = await make_client(models_dir=tiny_models.models_dir,
                            node={"cpus": 2, "memory": "8GiB", "gpus": 0})
    resp = await api.post("/api/deployments", json={"name": "g", "model": CHAT,
                                                    "hardware": "a10"})
    assert resp.status == 422
    err = (await resp.json())["error"]
    assert_error({"error": err}, code="tier_exceeds_node", param="hardware")
    assert "0 GPU" in err["message"]
    assert (await api.get("/api/deployments/g")).status == 404  # nothing was created
