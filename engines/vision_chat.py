"""What the image-to-text engines (caption, vqa) share: reading the chat request, and
answering it in chat.completion shape, whole or streamed.

A request holds exactly one image part (in any message); the text is the text of the
last user message (BLIP's caption prefix, moondream2's question). Decoding is greedy
unless the request sets `temperature` itself (> 0): captions and answers should not
change from one call to the next by default.

The model side is a *producer* per choice: a blocking function that runs on the
engine's worker thread, hands text chunks to `emit` as they come, checks `should_stop`
between tokens, and returns how many tokens it made and why it ended. Chunks cross to
the event loop with `call_soon_threadsafe`; stop strings are cut on the loop side
(`textstream.StopMatcher`), so the streamed and the whole answers are built from the
same deltas and cannot differ. Streams end with the usage comment
(`protocol.USAGE_COMMENT`) the router accounts from, then `data: [DONE]`.
Nothing here imports torch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from engines import protocol
from engines.base import RequestError, Worker
from engines.protocol import ChatCompletionRequest, ImagePart, TextPart
from engines.textstream import StopMatcher

log = logging.getLogger(__name__)

FINISH_STOP = "stop"
FINISH_LENGTH = "length"

Emit = Callable[[str], None]
ShouldStop = Callable[[], bool]


@dataclass(frozen=True)
class Produced:
    completion_tokens: int
    finish_reason: str  # FINISH_STOP (the model ended) or FINISH_LENGTH (the budget did)


Producer = Callable[[Emit, ShouldStop], Produced]


@dataclass(frozen=True)
class VisionPrompt:
    image_url: str
    image_param: str  # e.g. messages.0.content.1.image_url.url
    text: str  # the last user message's text ("" when it has none)


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int
    temperature: float  # 0.0: greedy
    top_p: float
    seed: int | None

    def for_choice(self, index: int) -> Decoding:
        # seed + index: each choice is reproducible however requests interleave
        return self if self.seed is None else replace(self, seed=self.seed + index)


def vision_prompt(body: ChatCompletionRequest) -> VisionPrompt:
    """The one image part and the user's text; RequestError 400 naming what is wrong."""
    images: list[tuple[str, str]] = []
    text = ""
    for i, message in enumerate(body.messages):
        content = message.content
        if isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, ImagePart):
                    images.append((part.image_url.url, f"messages.{i}.content.{j}.image_url.url"))
        if message.role == "user":
            if isinstance(content, str):
                text = content
            elif content:
                text = " ".join(p.text for p in content if isinstance(p, TextPart))
            else:
                text = ""
    if not images:
        raise RequestError(
            400, "messages: this model reads an image: add a content part "
                 '{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}',
            param="messages", code="image_missing")
    if len(images) > 1:
        raise RequestError(400, f"{images[1][1]}: one image per request, not {len(images)}",
                           param=images[1][1], code="too_many_images")
    return VisionPrompt(images[0][0], images[0][1], text.strip())


def decoding(body: ChatCompletionRequest, *, default_max: int, prompt_tokens: int,
             context_length: int | None) -> Decoding:
    """The token budget and sampling of a request, checked against the context."""
    limit_param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    requested = body.token_limit()
    room = None if context_length is None else context_length - prompt_tokens
    if room is not None and room < 1:
        raise RequestError(
            400, f"This model's maximum context length is {context_length} tokens, but the "
                 f"prompt has {prompt_tokens}: no room left for an answer.",
            param="messages", code="context_length_exceeded")
    if requested is None:
        budget = default_max if room is None else min(default_max, room)
    elif room is not None and requested > room:
        raise RequestError(
            400, f"This model's maximum context length is {context_length} tokens. However, "
                 f"you requested {prompt_tokens + requested} tokens ({prompt_tokens} in the "
                 f"prompt, {requested} for the answer). Please reduce {limit_param}.",
            param=limit_param, code="context_length_exceeded")
    else:
        budget = requested
    sampled = "temperature" in body.model_fields_set and body.temperature > 0
    return Decoding(budget, body.temperature if sampled else 0.0, body.top_p, body.seed)


@dataclass(frozen=True)
class _Delta:
    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0


def _retrieve(future: asyncio.Future[Produced]) -> None:
    # An answer abandoned by its client may still fail; log it, don't warn about it.
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.warning("abandoned answer failed: %r", exc)


class VisionChat:
    """Runs producers on the worker and answers in chat.completion shape."""

    def __init__(self, worker: Worker, model_name: str) -> None:
        self.worker = worker
        self.model_name = model_name
        self._shutdown = threading.Event()

    def close(self) -> None:
        """Ends any running answer at its next token."""
        self._shutdown.set()

    async def answer(self, request: web.Request, body: ChatCompletionRequest,
                     prompt_tokens: int, producer: Callable[[int], Producer]) -> web.StreamResponse:
        """`producer(i)` makes choice i; the answer is whole or SSE as `body.stream` says."""
        stops = tuple(body.stop_strings())
        shape = _Shape(self.model_name)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return await self._stream(request, shape, body.n, prompt_tokens, producer, stops,
                                      include_usage)
        started = time.monotonic()
        texts = [""] * body.n
        finishes: list[str | None] = [None] * body.n
        completion = 0
        for index in range(body.n):
            async with aclosing(self._deltas(producer(index), stops)) as deltas:
                async for delta in deltas:
                    texts[index] += delta.text
                    if delta.finish_reason:
                        finishes[index] = delta.finish_reason
                        completion += delta.completion_tokens
        usage = _usage(prompt_tokens, completion)
        log.info("chat.completion: %s tokens in %.2fs", usage, time.monotonic() - started)
        return web.json_response(shape.whole(texts, finishes, usage))

    async def _deltas(self, produce: Producer, stops: tuple[str, ...]
                      ) -> AsyncGenerator[_Delta, None]:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[str | None] = asyncio.Queue()
        cancel = threading.Event()

        def send(item: str | None) -> None:
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, item)
            except RuntimeError:  # the loop closed: nobody is listening any more
                pass

        def should_stop() -> bool:
            return cancel.is_set() or self._shutdown.is_set()

        def job() -> Produced:
            try:
                if self._shutdown.is_set():
                    raise RuntimeError("the engine is shutting down")
                if cancel.is_set():  # abandoned while it waited for its turn
                    return Produced(0, FINISH_STOP)
                return produce(lambda text: send(text) if text else None, should_stop)
            finally:
                send(None)

        done = self.worker.submit(job)
        stopper = StopMatcher(stops)
        try:
            while (chunk := await chunks.get()) is not None:
                text = stopper.feed(chunk)
                if stopper.stopped:
                    cancel.set()
                if text:
                    yield _Delta(text)
                if stopper.stopped:
                    break
            produced = await done  # re-raises what the producer raised
            tail = stopper.flush()
            finish = FINISH_STOP if stopper.stopped else produced.finish_reason
            yield _Delta(tail, finish, produced.completion_tokens)
        finally:
            cancel.set()
            done.add_done_callback(_retrieve)

    async def _stream(self, request: web.Request, shape: _Shape, n: int, prompt_tokens: int,
                      producer: Callable[[int], Producer], stops: tuple[str, ...],
                      include_usage: bool) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        started = time.monotonic()

        async def send(payload: dict[str, Any] | str) -> None:
            if isinstance(payload, dict) and include_usage:
                payload["usage"] = None
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await response.write(f"data: {data}\n\n".encode())

        completion = 0
        try:
            for index in range(n):
                await send(shape.chunk(index, {"role": "assistant", "content": ""}, None))
                async with aclosing(self._deltas(producer(index), stops)) as deltas:
                    async for delta in deltas:
                        if delta.text:
                            await send(shape.chunk(index, {"content": delta.text}, None))
                        if delta.finish_reason:
                            completion += delta.completion_tokens
                            await send(shape.chunk(index, {}, delta.finish_reason))
            usage = _usage(prompt_tokens, completion)
            if include_usage:
                await response.write(f"data: {json.dumps(shape.usage_chunk(usage))}\n\n".encode())
            await response.write(protocol.USAGE_COMMENT + json.dumps(usage).encode() + b"\n\n")
            await send("[DONE]")
            log.info("chat.completion stream: %s tokens in %.2fs", usage,
                     time.monotonic() - started)
        except ConnectionResetError:
            log.info("client went away during a stream; the answer stopped")
        except Exception as exc:  # the stream is open: report in-band, keep the engine
            log.exception("an answer failed during a stream")
            body = protocol.error_body(f"generation failed: {exc}", "server_error", "engine_error")
            try:
                await response.write(f"data: {json.dumps(body)}\n\n".encode())
            except ConnectionResetError:
                pass
        return response


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


class _Shape:
    """OpenAI's chat.completion object and its chunks, for one response."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _head(self, object: str) -> dict[str, Any]:
        return {"id": self.id, "object": object, "created": self.created, "model": self.model}

    def whole(self, texts: list[str], finishes: list[str | None],
              usage: dict[str, int]) -> dict[str, Any]:
        choices = [
            {"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
             "logprobs": None, "finish_reason": finish}
            for i, (text, finish) in enumerate(zip(texts, finishes, strict=True))
        ]
        return {**self._head("chat.completion"), "choices": choices, "usage": usage}

    def chunk(self, index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**self._head("chat.completion.chunk"), "choices": [choice]}

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        return {**self._head("chat.completion.chunk"), "choices": [], "usage": usage}
