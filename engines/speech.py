"""The speech task: Bark (transformers' BarkModel) behind /v1/audio/speech.

The answer is the audio file itself (wav, mp3, flac, opus in Ogg, or raw 16-bit pcm)
with its Content-Type, as OpenAI answers. `voice` is a Bark speaker preset of the model
folder (`v2/en_speaker_6`; BarkProcessor reads them from `speaker_embeddings_path.json`)
or an OpenAI voice name, mapped to a preset by `OPENAI_VOICES`. A `seed` (a berth
extension) makes the answer reproducible byte for byte. Sampling follows Suno's own
defaults (temperature 0.7 for the semantic and coarse models, 0.5 for the fine one).

Bark reads at most `max_input_semantic_length` text tokens (256) and says them in about
13 seconds; a longer input is refused with 400 instead of being cut silently.

`stream_format: "sse"` answers in OpenAI's event shape: `speech.audio.delta` events whose
`audio` is base64 of consecutive pieces of the same file (joined, they are the bytes
the plain answer has), then `speech.audio.done` with the usage (`output_tokens` is 0:
Bark's audio tokens are not counted). Bark makes the whole waveform at once, so the
events come after it, not during it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from aiohttp import web
from pydantic import BaseModel
from transformers import BarkModel, BarkProcessor

from engines import audio, protocol
from engines.base import RequestError, Worker, check_model_dir, quiet_transformers, setup_torch
from engines.protocol import EngineSpec, SpeechRequest

log = logging.getLogger(__name__)

# OpenAI's voices, each given one of Bark's English speakers (v2/en_speaker_9 is the
# only female one of the ten, so the voices OpenAI describes as female share it).
OPENAI_VOICES: dict[str, str] = {
    "alloy": "v2/en_speaker_6",
    "ash": "v2/en_speaker_1",
    "ballad": "v2/en_speaker_2",
    "coral": "v2/en_speaker_9",
    "echo": "v2/en_speaker_3",
    "fable": "v2/en_speaker_4",
    "onyx": "v2/en_speaker_0",
    "nova": "v2/en_speaker_9",
    "sage": "v2/en_speaker_9",
    "shimmer": "v2/en_speaker_9",
    "verse": "v2/en_speaker_5",
}
# Suno's bark package samples with these; BarkModel.generate is greedy unless told.
SAMPLING: dict[str, Any] = {
    "do_sample": True,
    "semantic_temperature": 0.7,
    "coarse_temperature": 0.7,
    "fine_temperature": 0.5,
}
_PROMPT_KEYS = ("semantic_prompt", "coarse_prompt", "fine_prompt")
SSE_PIECE_BYTES = 48 * 1024  # of audio file per `speech.audio.delta` event


def load(spec: EngineSpec, worker: Worker) -> SpeechEngine:
    """Loads BarkProcessor and BarkModel from spec.model_path (local files only); blocking."""
    check_model_dir(spec)
    dtype, device = setup_torch(spec)
    quiet_transformers()
    processor = BarkProcessor.from_pretrained(spec.model_path, local_files_only=True)
    model = BarkModel.from_pretrained(spec.model_path, dtype=dtype, device_map=device,
                                      local_files_only=True)
    model.eval()
    engine = SpeechEngine(spec, model, processor, worker, device)
    log.info("loaded %s (%d voice presets, %d Hz, at most %d input tokens, %s on %s)",
             spec.model_path, len(engine.presets), engine.sample_rate,
             engine.context_length, dtype, device)
    return engine


def available_presets(processor: Any, folder: Path) -> list[str]:
    """The speaker presets whose three prompt files are in the folder."""
    table = processor.speaker_embeddings or {}
    found = []
    for name in processor.available_voice_presets:
        paths = table.get(name)
        if isinstance(paths, dict) and all(
            isinstance(paths.get(k), str) and (folder / paths[k]).is_file() for k in _PROMPT_KEYS
        ):
            found.append(name)
        else:
            log.warning("voice preset %s is listed but its files are missing; left out", name)
    return found


class SpeechEngine:
    def __init__(self, spec: EngineSpec, model: Any, processor: Any, worker: Worker,
                 device: str) -> None:
        self.spec = spec
        self.model = model
        self.processor = processor
        self.worker = worker
        self.device = device
        generation = model.generation_config
        semantic = getattr(generation, "semantic_config", None) or {}
        self.context_length: int = int(semantic.get("max_input_semantic_length", 256))
        codec_rate = getattr(model.config.codec_config, "sampling_rate", 24_000)
        self.sample_rate = int(getattr(generation, "sample_rate", None) or codec_rate)
        self.presets = available_presets(processor, Path(spec.model_path))
        self.voices = self._voice_table()

    def _voice_table(self) -> dict[str, str | None]:
        """Every accepted voice -> its preset (None: Bark's own, unprompted voice)."""
        table: dict[str, str | None] = {name: name for name in self.presets}
        missing = sorted({p for p in OPENAI_VOICES.values() if p not in table})
        if missing:
            log.warning("presets %s are not in the folder: the OpenAI voices mapped to "
                        "them speak with Bark's unprompted voice", missing)
        for name, preset in OPENAI_VOICES.items():
            table[name] = preset if preset in table else None
        return table

    def close(self) -> None:
        pass  # a Bark generation runs to its end; requests are one at a time

    async def handle(self, route: str, body: BaseModel, request: web.Request) -> web.StreamResponse:
        if not isinstance(body, SpeechRequest):
            raise RequestError(400, f"{route} is not a speech route", code="unsupported_route")
        preset = self.voice(body.voice)
        started = time.monotonic()
        tokens = await asyncio.to_thread(self._check_input, body.input)
        samples = await self.worker.submit(self._generate, body.input, preset, body.seed)
        data, content_type = await asyncio.to_thread(
            audio.encode, samples, self.sample_rate, body.response_format)
        log.info("speech: %d tokens, voice %s -> %.2f s of audio, %s %d bytes in %.2fs",
                 tokens, preset, samples.size / self.sample_rate, body.response_format,
                 len(data), time.monotonic() - started)
        if body.stream_format == "sse":
            return await _send_events(request, data, tokens)
        return web.Response(body=data, content_type=content_type)

    def voice(self, name: str) -> str | None:
        """The preset for a request's voice; an unknown voice is a 400 naming the choices."""
        if name in self.voices:
            return self.voices[name]
        openai = ", ".join(OPENAI_VOICES)
        presets = ", ".join(self.presets) or "none in this model folder"
        raise RequestError(
            400,
            f"voice: unknown voice {name!r}; choose an OpenAI voice ({openai}) or a Bark "
            f"speaker preset ({presets})",
            code="invalid_voice",
            param="voice",
        )

    def _check_input(self, text: str) -> int:
        count = len(self.processor.tokenizer(text, add_special_tokens=False).input_ids)
        if count == 0 or not text.strip():
            raise RequestError(400, "input: there is nothing to say (no text tokens)",
                               code="invalid_value", param="input")
        if count > self.context_length:
            raise RequestError(
                400,
                f"input: {count} tokens; Bark reads at most {self.context_length} tokens "
                f"(about 13 seconds of speech) per request: split the text",
                code="input_too_long",
                param="input",
            )
        return count

    def _generate(self, text: str, preset: str | None, seed: int | None) -> np.ndarray:
        """The waveform (float32, mono, at sample_rate) of one text; on the worker thread."""
        inputs = self.processor(text, voice_preset=preset, max_length=self.context_length)
        kwargs: dict[str, Any] = {
            "input_ids": inputs["input_ids"].to(self.device),
            "attention_mask": inputs["attention_mask"].to(self.device),
        }
        if "history_prompt" in inputs:
            kwargs["history_prompt"] = {
                k: v.to(self.device) for k, v in inputs["history_prompt"].items()
            }
        with torch.random.fork_rng(enabled=seed is not None), torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            waveform = self.model.generate(**kwargs, **SAMPLING)
        return waveform[0].float().cpu().numpy()


async def _send_events(request: web.Request, data: bytes, tokens: int) -> web.StreamResponse:
    """The audio file as OpenAI's speech events (stream_format "sse")."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)

    async def send(event: dict[str, Any]) -> None:
        await response.write(f"data: {json.dumps(event)}\n\n".encode())

    try:
        for start in range(0, len(data), SSE_PIECE_BYTES):
            piece = base64.b64encode(data[start:start + SSE_PIECE_BYTES]).decode("ascii")
            await send({"type": "speech.audio.delta", "audio": piece})
        # the router accounts tokens from this comment, as on every stream
        usage = {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}
        await response.write(protocol.USAGE_COMMENT + json.dumps(usage).encode() + b"\n\n")
        await send({"type": "speech.audio.done", "usage": {
            "input_tokens": tokens, "output_tokens": 0, "total_tokens": tokens}})
        await response.write_eof()
    except ConnectionResetError:
        log.info("client went away during a speech stream")
    return response
