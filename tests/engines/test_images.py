"""The images engine (SDXL base and turbo) in-process, on the tiny random pipelines.

Each engine app loads its pipeline once per test (~1 s after the first diffusers
import); the tests group their checks to keep that count low.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from engines.app import STATE
from engines.images import BASE_DEFAULTS, TURBO_DEFAULTS, _base_url, defaults_for
from engines.protocol import BASE_URL_HEADER, IMAGES_GENERATIONS, Task
from engines.tiny.sdxl import BASE, TURBO
from tests.engines.conftest import make_spec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAME = re.compile(r"[0-9a-f]{32}\.png")


def image_spec(tiny_zoo, model_id: str, **extra: Any):
    spec = make_spec(tiny_zoo.path(model_id), Task.IMAGES, name="img", **extra)
    return dataclasses.replace(spec, model=model_id)  # the per-model defaults key on it


async def generate(client, **body: Any) -> list[bytes]:
    resp = await client.post(IMAGES_GENERATIONS, json={"prompt": "a red boat", **body})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/json")
    answer = await resp.json()
    assert isinstance(answer["created"], int)
    assert all(set(d) == {"b64_json", "revised_prompt"} for d in answer["data"])
    assert all(d["revised_prompt"] is None for d in answer["data"])
    return [base64.b64decode(d["b64_json"]) for d in answer["data"]]


def decoded(png: bytes) -> Image.Image:
    assert png.startswith(PNG_MAGIC)
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG" and image.mode == "RGB"
    return image


async def test_turbo_sizes_seeds_and_step_limit(engine_client, tiny_zoo):
    client = await engine_client(image_spec(tiny_zoo, TURBO))

    pngs = await generate(client, n=2, size="64x64", seed=11)
    assert len(pngs) == 2
    assert [decoded(p).size for p in pngs] == [(64, 64), (64, 64)]
    assert pngs[0] != pngs[1]  # seeds 11 and 12
    # same seed, same bytes; image i is the one-image answer for seed + i
    assert await generate(client, n=2, size="64x64", seed=11) == pngs
    assert await generate(client, n=1, size="64x64", seed=12) == [pngs[1]]
    assert await generate(client, n=1, size="64x64", seed=13) != [pngs[1]]
    # the defaults: native size, 1 step, guidance 0
    assert await generate(client, seed=11) == [pngs[0]]
    assert await generate(client, seed=11, num_inference_steps=1, guidance_scale=0.0) == [pngs[0]]
    # sizes other than native, width first
    [wide] = await generate(client, size="96x64", seed=1, num_inference_steps=4)
    assert decoded(wide).size == (96, 64)

    for body, param in (({"num_inference_steps": 5}, "num_inference_steps"),
                        ({"size": "500x300"}, "size"), ({"size": "abc"}, "size"),
                        ({"size": "64x4096"}, "size"), ({"n": 5}, "n"),
                        ({"response_format": "png"}, "response_format"),
                        ({"guidance_scale": "5"}, "guidance_scale"),
                        ({"prompt": ""}, "prompt")):
        resp = await client.post(IMAGES_GENERATIONS, json={"prompt": "x", **body})
        assert resp.status == 400, body
        error = (await resp.json())["error"]
        assert error["param"] == param and error["message"]
    # files_dir is empty here: nowhere to keep a file for `url`
    resp = await client.post(IMAGES_GENERATIONS, json={"prompt": "x", "response_format": "url"})
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == "response_format"


async def test_base_defaults_and_no_turbo_limit(engine_client, tiny_zoo):
    client = await engine_client(image_spec(tiny_zoo, BASE))
    [default] = await generate(client, seed=3)
    assert decoded(default).size == (64, 64)
    # 30 steps at guidance 5 is the default
    assert await generate(client, seed=3, num_inference_steps=30, guidance_scale=5.0) == [default]
    [other] = await generate(client, seed=3, num_inference_steps=6, guidance_scale=5.0,
                             negative_prompt="blurry")
    assert other != default and decoded(other).size == (64, 64)


async def test_url_answers_write_pngs_where_the_server_serves_them(engine_client, tiny_zoo,
                                                                  tmp_path: Path):
    files = tmp_path / "files"
    client = await engine_client(image_spec(tiny_zoo, TURBO, files_dir=str(files)))
    body = {"prompt": "a red boat", "n": 2, "seed": 5, "response_format": "url"}
    resp = await client.post(IMAGES_GENERATIONS, json=body,
                             headers={BASE_URL_HEADER: "http://berth.example:8080"})
    assert resp.status == 200, await resp.text()
    data = (await resp.json())["data"]
    assert len(data) == 2 and all(set(d) == {"url", "revised_prompt"} for d in data)
    names = []
    for d in data:
        prefix = "http://berth.example:8080/files/images/"
        assert d["url"].startswith(prefix)
        name = d["url"].removeprefix(prefix)
        assert NAME.fullmatch(name)
        names.append(name)
        assert decoded((files / "images" / name).read_bytes()).size == (64, 64)
    assert len(set(names)) == 2
    assert sorted(p.name for p in (files / "images").iterdir()) == sorted(names)  # no temps
    # same seed: the same bytes as b64_json
    b64 = await generate(client, n=2, seed=5)
    assert b64 == [(files / "images" / n).read_bytes() for n in names]
    # without the router's header (or with a malformed one) the URL is relative
    for headers in ({}, {BASE_URL_HEADER: "javascript:alert(1)//"}):
        resp = await client.post(IMAGES_GENERATIONS, json={**body, "n": 1}, headers=headers)
        [d] = (await resp.json())["data"]
        assert re.fullmatch(r"/files/images/[0-9a-f]{32}\.png", d["url"])

    # an engine shutting down stops generating (at the next step) and says so
    client.app[STATE].engine.close()
    resp = await client.post(IMAGES_GENERATIONS, json=body)
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "engine_stopping"


def test_defaults_per_model():
    assert defaults_for(BASE) == BASE_DEFAULTS and (BASE_DEFAULTS.steps, BASE_DEFAULTS.guidance,
                                                   BASE_DEFAULTS.max_steps) == (30, 5.0, None)
    assert defaults_for(TURBO) == TURBO_DEFAULTS
    assert (TURBO_DEFAULTS.steps, TURBO_DEFAULTS.guidance, TURBO_DEFAULTS.max_steps) == (1, 0.0, 4)
    assert defaults_for("someone/my-sdxl-turbo-finetune") == TURBO_DEFAULTS
    assert defaults_for("someone/sdxl-finetune") == BASE_DEFAULTS


@pytest.mark.parametrize(("header", "base"), [
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("https://berth.example/", "https://berth.example"),
    ("http://[::1]:9000", "http://[::1]:9000"),
    ("", ""),
    ("ftp://x", ""),
    ("http://evil.example/path", ""),
    ("http://a b", ""),
])
def test_base_url_header_is_checked(header, base):
    assert _base_url(header) == base
