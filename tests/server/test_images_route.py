"""SDXL base and turbo through the whole server, and the /files/images/ route.

One server, two engine processes (each pays the diffusers import): the tiny random
pipelines (engines.tiny.sdxl) are deployed through the admin API under their catalog
ids and called through the router. The /files/ route tests need no engine.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import secrets
import time

import aiohttp
from PIL import Image

from server import files, keys
from server.app import create_app
from server.config import load_config
from tests.helpers import write_config
from tests.server.conftest import wait_for
from tests.server.test_router_errors import assert_error

IMAGES = "/v1/images/generations"
BASE, TURBO = "stabilityai/stable-diffusion-xl-base-1.0", "stabilityai/sdxl-turbo"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def wait_ready(api, name: str, seconds: float = 120.0) -> dict:
    async with asyncio.timeout(seconds):
        while True:
            resp = await api.get(f"/api/deployments/{name}")
            assert resp.status == 200
            dep = await resp.json()
            assert dep["status"] not in ("failed", "crashed"), dep
            if dep["status"] == "ready":
                return dep
            await asyncio.sleep(0.1)


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_MAGIC)
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image.size


async def b64_images(api, path: str = IMAGES, **body) -> list[bytes]:
    resp = await api.post(path, json={"prompt": "a lighthouse at dusk", **body})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/json")
    answer = await resp.json()
    assert isinstance(answer["created"], int)
    assert [set(d) for d in answer["data"]] == [{"b64_json", "revised_prompt"}] * len(
        answer["data"])
    return [base64.b64decode(d["b64_json"]) for d in answer["data"]]


async def test_sdxl_base_and_turbo_deployed_and_drawing(make_client, tiny_zoo, tmp_path):
    models = tiny_zoo.models_dir(tmp_path / "models", BASE, TURBO)
    api = await make_client(models_dir=models)
    for name, model in (("turbo", TURBO), ("base", BASE)):
        resp = await api.post("/api/deployments",
                              json={"name": name, "model": model, "hardware": "micro"})
        assert resp.status == 201, await resp.text()
    for name, model in (("turbo", TURBO), ("base", BASE)):
        dep = await wait_ready(api, name)
        assert dep["model"] == model and dep["hardware"] == "micro"

    # n=2 at 64x64: two decodable 64x64 PNGs; same seed same bytes, another seed not
    pngs = await b64_images(api, model="turbo", n=2, size="64x64", seed=42)
    assert [png_size(p) for p in pngs] == [(64, 64), (64, 64)]
    assert pngs[0] != pngs[1]
    assert await b64_images(api, model="turbo", n=2, size="64x64", seed=42) == pngs
    assert await b64_images(api, model="turbo", n=2, size="64x64", seed=43) != pngs
    # base, on the /endpoints/{name} path (no `model`), a few steps to keep it quick
    [one] = await b64_images(api, "/endpoints/base" + IMAGES, seed=42, num_inference_steps=3)
    assert png_size(one) == (64, 64)
    assert await b64_images(api, model="base", seed=42, num_inference_steps=3) == [one]

    # url: an absolute link to this server, fetched without any token
    resp = await api.post(IMAGES, json={"model": "turbo", "prompt": "a lighthouse at dusk",
                                        "n": 2, "seed": 42, "size": "64x64",
                                        "response_format": "url"})
    assert resp.status == 200, await resp.text()
    data = (await resp.json())["data"]
    assert [set(d) for d in data] == [{"url", "revised_prompt"}] * 2
    root = str(api.make_url("/")).rstrip("/")
    async with aiohttp.ClientSession() as anonymous:
        for d, png in zip(data, pngs, strict=True):
            assert d["url"].startswith(f"{root}/files/images/")
            async with anonymous.get(d["url"]) as got:
                assert got.status == 200
                assert got.headers["Content-Type"] == "image/png"
                assert await got.read() == png  # the same seed as the b64 answer
    state = api.app[keys.CONFIG].server.state_dir
    assert len(list((state / "files" / "images").glob("*.png"))) == 2

    # refusals, as JSON naming their param
    for body, param in (({"size": "500x300"}, "size"), ({"size": "abc"}, "size"),
                        ({"num_inference_steps": 10}, "num_inference_steps")):
        resp = await api.post(IMAGES, json={"model": "turbo", "prompt": "x", **body})
        assert resp.status == 400, body
        assert_error(await resp.json(), param=param)
    resp = await api.post(IMAGES, json={"model": "base", "prompt": "x",
                                        "num_inference_steps": 10, "size": "64x64"})
    assert resp.status == 200  # only turbo is limited to 4 steps
    resp = await api.post("/v1/chat/completions", json={
        "model": "turbo", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status == 400
    assert_error(await resp.json(), code="unsupported_route")


def _write(folder, *, age_s: float = 0.0) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{secrets.token_hex(16)}.png"
    (folder / name).write_bytes(PNG_MAGIC + b"not really")
    when = time.time() - age_s
    os.utime(folder / name, (when, when))
    return name


async def test_files_route_serves_fresh_pngs_without_a_token(make_client):
    api = await make_client(headers={})  # no Authorization header at all
    folder = files.images_dir(api.app)
    ttl = api.app[keys.CONFIG].server.files_ttl_s
    fresh, old = _write(folder), _write(folder, age_s=ttl + 5)
    resp = await api.get(f"/files/images/{fresh}")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert await resp.read() == PNG_MAGIC + b"not really"
    resp = await api.head(f"/files/images/{fresh}")  # HEAD answers as GET does, bodiless
    assert (resp.status, resp.headers["Content-Type"]) == (200, "image/png")
    assert int(resp.headers["Content-Length"]) == len(PNG_MAGIC + b"not really")
    # expired: 404 even before the sweep, and gone afterwards
    resp = await api.get(f"/files/images/{old}")
    assert resp.status == 404
    assert_error(await resp.json(), code="file_not_found")
    assert not (folder / old).exists()
    # every other name is the same 404 JSON, and nothing else of the state dir is served
    (folder.parent.parent / "secret.png").write_bytes(b"x")
    for name in ("nothere" + "0" * 25 + ".png", fresh.upper(), fresh[:-4], f".{fresh}.tmp",
                 "..%2F..%2Fsecret.png", "%2e%2e", f"{fresh}%00", f"{fresh}/x"):
        resp = await api.get(f"/files/images/{name}")
        assert resp.status == 404, name
        assert_error(await resp.json())
    for path in ("/files/images/../../admin.token", "/files/admin.token", "/files/"):
        resp = await api.get(path)
        assert resp.status in (404, 401), path
        assert_error(await resp.json())
    # the inference and admin routes still want a token
    resp = await api.get("/api/deployments")
    assert resp.status == 401


def test_sweep_deletes_only_expired_files(tmp_path):
    folder = tmp_path / "images"
    assert files.sweep(folder, 60) == 0  # no folder yet
    fresh, old = _write(folder), _write(folder, age_s=120)
    assert (folder / old).exists()
    stale_tmp = folder / f".{secrets.token_hex(16)}.png.tmp"
    stale_tmp.write_bytes(b"half")
    os.utime(stale_tmp, (time.time() - 120, time.time() - 120))
    assert files.sweep(folder, 60) == 2
    assert sorted(p.name for p in folder.iterdir()) == [fresh]


async def test_cleanup_task_sweeps_while_the_server_runs(aiohttp_client, tmp_path, monkeypatch):
    monkeypatch.setattr(files, "SWEEP_MAX_INTERVAL_S", 0.05)
    path = write_config(tmp_path / "config.toml", state_dir=tmp_path / "state",
                        models_dir=tmp_path / "models")
    path.write_text(path.read_text().replace("[server]\n", "[server]\nfiles_ttl_s = 1\n", 1))
    config = load_config(path)
    assert config.server.files_ttl_s == 1
    folder = config.server.state_dir / "files" / "images"
    name = _write(folder, age_s=5)
    await aiohttp_client(create_app(config))
    await wait_for(lambda: not (folder / name).exists(), 10)
