"""The images task: SDXL base and SDXL turbo (diffusers) behind /v1/images/generations.

- The pipeline folder is loaded local-only (`model_index.json` + components), in the
  dtype `setup_torch` picks: float32 on a CPU without native bf16, bfloat16 on a GPU or a
  CPU with AVX512-BF16/AMX (bf16 keeps float32's range, so the SDXL VAE, which
  overflows in float16, needs no upcast), or what the deployment asks for (float16
  works too: diffusers upcasts the VAE for the decode).
- Defaults per model: base 30 steps at guidance 5.0; turbo 1 step at guidance 0.0 (it
  was distilled for 1-4 steps without classifier-free guidance), more than 4 steps is
  refused. The default size is the model's native one (UNet sample size x VAE factor:
  1024 for base, 512 for turbo, 64 for the tiny test models).
- Image i is drawn with its own CPU generator seeded `seed + i`, one image per pipeline
  call: the same request with the same seed gives the same bytes, image i equals a
  one-image request with seed + i, on any device, and peak memory does not grow with n.
  Without a seed a random one is drawn.
- `b64_json` answers carry PNG bytes; `url` answers write the PNG under
  `<files_dir>/images/<128-bit random hex>.png` (atomically) for the server to serve at
  /files/images/; the URL's base comes from the router's BASE_URL_HEADER.
- Every torch call runs on the engine's one Worker thread. A request whose client went
  away, or an engine shutting down, stops at the next denoising step.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from aiohttp import web
from pydantic import BaseModel

from engines.base import RequestError, Worker, check_model_dir, setup_torch
from engines.protocol import BASE_URL_HEADER, EngineSpec, ImageGenerationRequest

log = logging.getLogger(__name__)

IMAGES_SUBDIR = "images"
_BASE_URL = re.compile(r"https?://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")
_SEED_SPACE = 2**63


@dataclass(frozen=True)
class Defaults:
    steps: int
    guidance: float
    max_steps: int | None = None  # None: the request body's own bound


BASE_DEFAULTS = Defaults(steps=30, guidance=5.0)
TURBO_DEFAULTS = Defaults(steps=1, guidance=0.0, max_steps=4)
DEFAULTS: dict[str, Defaults] = {
    "stabilityai/stable-diffusion-xl-base-1.0": BASE_DEFAULTS,
    "stabilityai/sdxl-turbo": TURBO_DEFAULTS,
}


def defaults_for(model_id: str) -> Defaults:
    """A known model's defaults; an unknown SDXL folder is taken for a turbo when its
    name says so, else for a base model."""
    known = DEFAULTS.get(model_id)
    if known is not None:
        return known
    return TURBO_DEFAULTS if "turbo" in model_id.lower() else BASE_DEFAULTS


def load(spec: EngineSpec, worker: Worker) -> ImageEngine:
    """Loads the SDXL pipeline from spec.model_path (local files only); blocking."""
    import diffusers
    import transformers
    from diffusers import StableDiffusionXLPipeline

    check_model_dir(spec)
    dtype, device = setup_torch(spec)
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    pipe = StableDiffusionXLPipeline.from_pretrained(
        spec.model_path, dtype=dtype, local_files_only=True, use_safetensors=True,
        add_watermarker=False,
    )
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    engine = ImageEngine(spec, pipe, worker, defaults_for(spec.model))
    log.info(
        "loaded %s (%s, %s on %s, native %dx%d, %d steps at guidance %g by default)",
        spec.model_path, type(pipe.scheduler).__name__, dtype, device, *engine.native_size,
        engine.defaults.steps, engine.defaults.guidance,
    )
    return engine


class _Stopped(Exception):
    """Raised inside the pipeline to end a generation nobody waits for any more."""


class ImageEngine:
    def __init__(self, spec: EngineSpec, pipe: Any, worker: Worker, defaults: Defaults) -> None:
        self.spec = spec
        self.pipe = pipe
        self.worker = worker
        self.defaults = defaults
        side = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        self.native_size = (side, side)
        self.context_length: int | None = int(pipe.tokenizer.model_max_length)  # prompt tokens
        self.files_dir = Path(spec.files_dir) / IMAGES_SUBDIR if spec.files_dir else None
        self._closing = threading.Event()

    def close(self) -> None:
        self._closing.set()  # a running generation stops at its next step

    async def handle(self, route: str, body: BaseModel, request: web.Request) -> web.StreamResponse:
        if not isinstance(body, ImageGenerationRequest):
            raise RequestError(400, f"{route} is not an image generation route",
                               code="unsupported_route")
        steps = body.num_inference_steps or self.defaults.steps
        if self.defaults.max_steps is not None and steps > self.defaults.max_steps:
            raise RequestError(
                400,
                f"num_inference_steps: {self.spec.model} makes images in 1 to "
                f"{self.defaults.max_steps} steps; not {steps}",
                code="unsupported_value", param="num_inference_steps",
            )
        if body.response_format == "url" and self.files_dir is None:
            raise RequestError(400, "response_format: this server keeps no files; ask for "
                               "b64_json", code="unsupported_value", param="response_format")
        guidance = self.defaults.guidance if body.guidance_scale is None else body.guidance_scale
        width, height = body.dimensions() or self.native_size
        seed = body.seed if body.seed is not None else secrets.randbelow(_SEED_SPACE)
        job = _Job(body.prompt, body.negative_prompt, body.n, width, height, steps, guidance,
                   seed)
        cancel = threading.Event()
        started = time.monotonic()
        try:
            pngs = await self.worker.submit(self._generate, job, cancel)
        except _Stopped:
            raise RequestError(503, "the engine is shutting down", type="server_error",
                               code="engine_stopping", headers={"Retry-After": "2"}) from None
        finally:
            cancel.set()  # the client went away (or it is done): stop at the next step
        log.info("images: %d x %dx%d, %d steps, guidance %g, seed %d in %.2fs",
                 job.n, width, height, steps, guidance, seed, time.monotonic() - started)
        if body.response_format == "url":
            base = _base_url(request.headers.get(BASE_URL_HEADER, ""))
            data = [{"url": f"{base}/files/{IMAGES_SUBDIR}/{self._store(png)}",
                     "revised_prompt": None} for png in pngs]
        else:
            data = [{"b64_json": base64.b64encode(png).decode("ascii"), "revised_prompt": None}
                    for png in pngs]
        return web.json_response({"created": int(time.time()), "data": data})

    def _generate(self, job: _Job, cancel: threading.Event) -> list[bytes]:
        def check(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if cancel.is_set() or self._closing.is_set():
                raise _Stopped
            return tensors

        pngs: list[bytes] = []
        for i in range(job.n):
            if cancel.is_set() or self._closing.is_set():
                raise _Stopped
            generator = torch.Generator("cpu").manual_seed((job.seed + i) % 2**64)
            with torch.inference_mode():
                image = self.pipe(
                    prompt=job.prompt, negative_prompt=job.negative_prompt,
                    width=job.width, height=job.height, num_inference_steps=job.steps,
                    guidance_scale=job.guidance, generator=generator, output_type="pil",
                    callback_on_step_end=check,
                ).images[0]
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            pngs.append(buf.getvalue())
        return pngs

    def _store(self, png: bytes) -> str:
        """Writes one PNG where the server serves it from; returns its file name."""
        assert self.files_dir is not None
        self.files_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{secrets.token_hex(16)}.png"
        tmp = self.files_dir / f".{name}.tmp"  # never matches the server's name pattern
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(png)
        os.replace(tmp, self.files_dir / name)
        return name


@dataclass(frozen=True)
class _Job:
    prompt: str
    negative_prompt: str | None
    n: int
    width: int
    height: int
    steps: int
    guidance: float
    seed: int


def _base_url(header: str) -> str:
    """`scheme://host[:port]` as the router saw it; empty (relative URLs) when missing
    or malformed."""
    header = header.strip().rstrip("/")
    return header if _BASE_URL.fullmatch(header) else ""
