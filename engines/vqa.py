"""The vqa task: moondream2 behind /v1/chat/completions, through its own remote code.

moondream2 has no transformers class: its folder carries the Python that defines it
(config.json `auto_map`), so it loads only with `trust_remote_code=True`, which the
catalog allows for this model alone (`EngineSpec.trust_remote_code`). berth calls its
public methods: `query(image, question, stream=True, settings=...)["answer"]` for the
text of the last user message, or `caption(image, ...)["caption"]` when that message
has no text. Both yield text chunks, about one per token: `completion_tokens` counts
them. `prompt_tokens` counts the question's tokens where the folder has a tokenizer.
Greedy unless the request sets a temperature.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import torch
from aiohttp import web
from PIL import Image
from pydantic import BaseModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from engines.base import (
    RequestError,
    Worker,
    check_model_dir,
    quiet_transformers,
    sane_length,
    setup_torch,
)
from engines.image_input import ImageLimits, ImageReader
from engines.memory import memory_limit_bytes
from engines.protocol import ChatCompletionRequest, EngineSpec
from engines.vision_chat import (
    FINISH_LENGTH,
    FINISH_STOP,
    Decoding,
    Emit,
    Produced,
    Producer,
    ShouldStop,
    VisionChat,
    decoding,
    vision_prompt,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256


def load(spec: EngineSpec, worker: Worker) -> VqaEngine:
    """Loads moondream2 (its remote code) from spec.model_path, local files only."""
    check_model_dir(spec)
    dtype, device = setup_torch(spec)
    quiet_transformers()
    opts: dict[str, Any] = {"local_files_only": True, "trust_remote_code": spec.trust_remote_code}
    model = AutoModelForCausalLM.from_pretrained(spec.model_path, dtype=dtype, device_map=device,
                                                 **opts)
    model.eval()
    missing = [m for m in ("query", "caption") if not callable(getattr(model, m, None))]
    if missing:
        raise TypeError(f"{type(model).__name__} has no {' or '.join(missing)} method: "
                        "the vqa engine serves moondream2-style models")
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.model_path, **opts)
    except (OSError, ValueError, TypeError) as exc:  # counted without one, see _prompt_tokens
        log.warning("no tokenizer in %s (%s): prompt_tokens will read 0", spec.model_path, exc)
        tokenizer = None
    log.info("loaded %s (%s, %s on %s)", spec.model_path, type(model).__name__, dtype, device)
    return VqaEngine(spec, model, tokenizer, worker)


class VqaEngine:
    def __init__(self, spec: EngineSpec, model: Any, tokenizer: Any, worker: Worker) -> None:
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.images = ImageReader(ImageLimits.from_spec(spec, memory_limit_bytes()))
        self.chat = VisionChat(worker, spec.name)
        self.context_length = sane_length(getattr(model.config, "max_position_embeddings", None))

    def close(self) -> None:
        self.chat.close()

    async def handle(self, route: str, body: BaseModel, request: web.Request) -> web.StreamResponse:
        if not isinstance(body, ChatCompletionRequest):
            raise RequestError(400, f"{route} is not a vqa route", code="unsupported_route")
        prompt = vision_prompt(body)
        prompt_tokens = self._prompt_tokens(prompt.text)
        dec = decoding(body, default_max=DEFAULT_MAX_TOKENS, prompt_tokens=prompt_tokens,
                       context_length=self.context_length)
        # the decoded image counts against the engine's pixel budget until answered
        async with self.images.open(prompt.image_url, prompt.image_param) as image:

            def producer(index: int) -> Producer:
                return partial(self._answer, image, prompt.text, dec.for_choice(index))

            return await self.chat.answer(request, body, prompt_tokens, producer)

    def _prompt_tokens(self, question: str) -> int:
        if self.tokenizer is None or not question:
            return 0
        return len(self.tokenizer(question, add_special_tokens=False).input_ids)

    def _answer(self, image: Image.Image, question: str, dec: Decoding, emit: Emit,
                should_stop: ShouldStop) -> Produced:
        """Runs on the worker thread."""
        if dec.seed is not None:
            torch.manual_seed(dec.seed)
        settings = {"max_tokens": dec.max_new_tokens, "temperature": dec.temperature,
                    "top_p": dec.top_p}
        if question:
            chunks = self.model.query(image, question, stream=True, settings=settings)["answer"]
        else:
            chunks = self.model.caption(image, length="normal", stream=True,
                                        settings=settings)["caption"]
        count = 0
        try:
            for chunk in chunks:
                count += 1
                emit(str(chunk))
                if should_stop():
                    break
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return Produced(count, FINISH_LENGTH if count >= dec.max_new_tokens else FINISH_STOP)
