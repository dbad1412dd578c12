"""The caption task: BLIP (`BlipForConditionalGeneration`) behind /v1/chat/completions.

The request's one image part is the image; the text of the last user message, if any,
is the caption's prefix ("a photography of"), and the answer is the whole caption,
prefix included, as BLIP decodes it (lowercase). Greedy unless the request sets a
temperature. `prompt_tokens` counts the decoder's prompt ([DEC] and the prefix).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from aiohttp import web
from PIL import Image
from pydantic import BaseModel
from transformers import (
    BlipForConditionalGeneration,
    BlipProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from engines.base import RequestError, Worker, check_model_dir, quiet_transformers, setup_torch
from engines.image_input import ImageLimits, ImageReader
from engines.memory import memory_limit_bytes
from engines.protocol import ChatCompletionRequest, EngineSpec
from engines.textstream import IncrementalDetokenizer
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

DEFAULT_MAX_TOKENS = 40


def load(spec: EngineSpec, worker: Worker) -> CaptionEngine:
    """Loads the BLIP processor and model from spec.model_path (local files only)."""
    check_model_dir(spec)
    dtype, device = setup_torch(spec)
    quiet_transformers()
    processor = BlipProcessor.from_pretrained(spec.model_path, local_files_only=True)
    model = BlipForConditionalGeneration.from_pretrained(
        spec.model_path, dtype=dtype, device_map=device, local_files_only=True)
    model.eval()
    log.info("loaded %s (%s, %s on %s)", spec.model_path, type(model).__name__, dtype, device)
    return CaptionEngine(spec, processor, model, worker)


class _Streamer(BaseStreamer):
    """Turns generated ids into text chunks on the worker thread; the first `put` is the
    prompt, whose text (the caption prefix) becomes the first chunk."""

    def __init__(self, decode: Callable[[list[int]], str], emit: Emit) -> None:
        self._detok = IncrementalDetokenizer(lambda ids: decode(list(ids)))
        self._emit = emit
        self._prompt_seen = False
        self.generated: list[int] = []

    def put(self, value: torch.Tensor) -> None:
        ids = value.reshape(-1).tolist()
        if self._prompt_seen:
            self.generated.extend(ids)
        self._prompt_seen = True
        self._emit(self._detok.push(ids))

    def end(self) -> None:
        self._emit(self._detok.flush())


class _Stop(StoppingCriteria):
    def __init__(self, should_stop: ShouldStop) -> None:
        self._should_stop = should_stop

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        stop = self._should_stop()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool)  # type: ignore[return-value]


class CaptionEngine:
    def __init__(self, spec: EngineSpec, processor: Any, model: Any, worker: Worker) -> None:
        self.spec = spec
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.model = model
        self.images = ImageReader(ImageLimits.from_spec(spec, memory_limit_bytes()))
        self.chat = VisionChat(worker, spec.name)
        text_config = model.config.text_config
        self.context_length: int | None = text_config.max_position_embeddings
        self.sep_id: int = text_config.sep_token_id
        self.param = next(model.parameters())

    def close(self) -> None:
        self.chat.close()

    async def handle(self, route: str, body: BaseModel, request: web.Request) -> web.StreamResponse:
        if not isinstance(body, ChatCompletionRequest):
            raise RequestError(400, f"{route} is not a caption route", code="unsupported_route")
        prompt = vision_prompt(body)
        # [CLS] prefix [SEP]: BLIP's generate turns [CLS] into [DEC] and drops [SEP]
        ids = await asyncio.to_thread(lambda: list(self.tokenizer(prompt.text).input_ids))
        prompt_tokens = len(ids) - 1
        dec = decoding(body, default_max=DEFAULT_MAX_TOKENS, prompt_tokens=prompt_tokens,
                       context_length=self.context_length)
        # the decoded image counts against the engine's pixel budget until answered
        async with self.images.open(prompt.image_url, prompt.image_param) as image:

            def producer(index: int) -> Producer:
                return partial(self._caption, image, ids, dec.for_choice(index))

            return await self.chat.answer(request, body, prompt_tokens, producer)

    def _caption(self, image: Image.Image, ids: list[int], dec: Decoding, emit: Emit,
                 should_stop: ShouldStop) -> Produced:
        """Runs on the worker thread."""
        if dec.seed is not None:
            torch.manual_seed(dec.seed)
        pixels = self.processor.image_processor(images=image, return_tensors="pt").pixel_values
        pixels = pixels.to(self.param.device, self.param.dtype)
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.param.device)
        streamer = _Streamer(self._decode, emit)
        with torch.inference_mode():
            self.model.generate(
                pixel_values=pixels,
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                **_generation_knobs(dec),
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([_Stop(should_stop)]),
            )
        generated = streamer.generated
        ended = bool(generated) and generated[-1] == self.sep_id
        return Produced(len(generated), FINISH_STOP if ended else FINISH_LENGTH)

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))


def _generation_knobs(dec: Decoding) -> dict[str, Any]:
    # Every knob explicit: the request decides, not the checkpoint's defaults. BLIP's
    # generate sets eos ([SEP]) and pad itself, as keywords: so these are keywords too
    # (a GenerationConfig beside keywords is deprecated).
    knobs: dict[str, Any] = {"max_new_tokens": dec.max_new_tokens, "min_new_tokens": 0,
                             "num_beams": 1, "repetition_penalty": 1.0}
    if dec.temperature > 0:
        knobs.update(do_sample=True, temperature=dec.temperature, top_p=dec.top_p, top_k=0)
    else:
        knobs.update(do_sample=False)
    return knobs
