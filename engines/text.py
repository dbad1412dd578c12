"""The text task: a causal LM behind /v1/completions and /v1/chat/completions."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import jinja2
from aiohttp import web
from pydantic import BaseModel
from transformers import AutoModelForCausalLM

from engines import protocol
from engines.base import (
    RequestError,
    Worker,
    load_pretrained,
    sane_length,
)
from engines.generate import Delta, Generator, Sampling
from engines.protocol import ChatCompletionRequest, CompletionRequest, EngineSpec

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256


def load(spec: EngineSpec, worker: Worker) -> TextEngine:
    """Loads tokenizer and model from spec.model_path (local files only); blocking."""
    tokenizer, model, dtype, device = load_pretrained(spec, AutoModelForCausalLM)
    log.info("loaded %s (%s, %s on %s)", spec.model_path, type(model).__name__, dtype, device)
    return TextEngine(spec, Generator(model, tokenizer, worker))


@dataclass
class _Choice:
    index: int
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    tokens: int = 0


class TextEngine:
    def __init__(self, spec: EngineSpec, generator: Generator) -> None:
        self.spec = spec
        self.gen = generator
        self.tokenizer = generator.tokenizer
        config = generator.model.config
        self.context_length = sane_length(
            getattr(config, "max_position_embeddings", None),
            getattr(self.tokenizer, "model_max_length", None),
        )
        self.vocab_size = int(generator.model.get_input_embeddings().num_embeddings)
        # No token covers more characters than the longest entry of the vocabulary, so a
        # text needs at least len(text) / max_token_chars tokens: a cheap, sound bound
        # that refuses a prompt far over the context before it is tokenized at all.
        self.max_token_chars = max((len(t) for t in self.tokenizer.get_vocab()), default=1)

    def close(self) -> None:
        self.gen.close()

    async def handle(self, route: str, body: BaseModel, request: web.Request) -> web.StreamResponse:
        if isinstance(body, ChatCompletionRequest):
            self._refuse_if_surely_too_long(_chat_chars(body), "messages")
            # tokenizing runs off the event loop: the health route must keep answering
            prompt_ids = await asyncio.to_thread(self._chat_prompt, body)
            limit_param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
            budget = self._budget(len(prompt_ids), body.token_limit(), "messages", limit_param)
            shape: _Shape = _ChatShape(self.spec.name)
        elif isinstance(body, CompletionRequest):
            prompt = body.prompt
            if isinstance(prompt, str):
                self._refuse_if_surely_too_long(len(prompt), "prompt")
            elif prompt and isinstance(prompt[0], str):
                self._refuse_if_surely_too_long(len(prompt[0]), "prompt")
            prompt_ids = await asyncio.to_thread(self._completion_prompt, body)
            budget = self._budget(len(prompt_ids), body.max_tokens, "prompt", "max_tokens")
            shape = _CompletionShape(self.spec.name)
        else:
            raise RequestError(400, f"{route} is not a text route", code="unsupported_route")
        base = Sampling(budget, body.temperature, body.top_p, body.seed, tuple(body.stop_strings()))
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return await self._stream(request, shape, prompt_ids, base, body.n, include_usage)
        return await self._complete(shape, prompt_ids, base, body.n)

    # --- prompts ------------------------------------------------------------------

    def _completion_prompt(self, body: CompletionRequest) -> list[int]:
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
            ids = [int(t) for t in prompt]
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise RequestError(
                    400,
                    f"prompt: token id {bad[0]} is outside the vocabulary "
                    f"(0..{self.vocab_size - 1})",
                    code="invalid_value",
                    param="prompt",
                )
            return ids
        text = prompt[0] if isinstance(prompt, list) else prompt
        ids = list(self.tokenizer(str(text)).input_ids)
        if not ids:
            start = self.tokenizer.bos_token_id
            start = start if start is not None else self.tokenizer.eos_token_id
            if start is None:
                raise RequestError(400, "prompt: encodes to no tokens",
                                   code="invalid_value", param="prompt")
            ids = [start]
        return ids

    def _chat_prompt(self, body: ChatCompletionRequest) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise RequestError(
                400,
                f"model {self.spec.model} has no chat template; use {protocol.COMPLETIONS} instead",
                code="chat_template_missing",
                param="messages",
            )
        messages = [_render_message(i, m) for i, m in enumerate(body.messages)]
        try:
            text = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        except jinja2.TemplateError as exc:
            raise RequestError(
                400,
                f"messages: the chat template refused them: {exc}",
                code="chat_template_error",
                param="messages",
            ) from exc
        return list(self.tokenizer(str(text), add_special_tokens=False).input_ids)

    def _refuse_if_surely_too_long(self, chars: int, param: str) -> None:
        ctx = self.context_length
        if ctx is None:
            return
        at_least = -(-chars // self.max_token_chars)
        if at_least > ctx:
            raise RequestError(
                400,
                f"This model's maximum context length is {ctx} tokens, but the {param} has "
                f"{chars} characters: at least {at_least} tokens.",
                code="context_length_exceeded",
                param=param,
            )

    def _budget(self, n_prompt: int, requested: int | None, prompt_param: str, param: str) -> int:
        ctx = self.context_length
        if ctx is None:
            return requested or DEFAULT_MAX_TOKENS
        if requested is None:
            if n_prompt >= ctx:
                raise RequestError(
                    400,
                    f"This model's maximum context length is {ctx} tokens, "
                    f"but the prompt has {n_prompt} tokens: no room left for a completion.",
                    code="context_length_exceeded",
                    param=prompt_param,
                )
            return min(ctx - n_prompt, DEFAULT_MAX_TOKENS)
        if n_prompt + requested > ctx:
            raise RequestError(
                400,
                f"This model's maximum context length is {ctx} tokens. However, you requested "
                f"{n_prompt + requested} tokens ({n_prompt} in the prompt, {requested} for the "
                f"completion). Please reduce the prompt or {param}.",
                code="context_length_exceeded",
                param=param,
            )
        return requested

    # --- answers ------------------------------------------------------------------

    async def _choices(
        self, prompt_ids: list[int], base: Sampling, n: int
    ) -> AsyncGenerator[tuple[int, Delta], None]:
        for index in range(n):
            # seed + index: each choice is reproducible however requests interleave
            seed = None if base.seed is None else base.seed + index
            sampling = Sampling(base.max_new_tokens, base.temperature, base.top_p, seed, base.stops)
            async with aclosing(self.gen.generate(prompt_ids, sampling)) as deltas:
                async for delta in deltas:
                    yield index, delta

    async def _complete(
        self, shape: _Shape, prompt_ids: list[int], base: Sampling, n: int
    ) -> web.Response:
        started = time.monotonic()
        choices = [_Choice(i) for i in range(n)]
        async with aclosing(self._choices(prompt_ids, base, n)) as deltas:
            async for index, delta in deltas:
                choice = choices[index]
                choice.text.append(delta.text)
                if delta.finish_reason:
                    choice.finish_reason = delta.finish_reason
                    choice.tokens = delta.completion_tokens
        usage = _usage(len(prompt_ids), sum(c.tokens for c in choices))
        log.info("%s: %s tokens in %.2fs", shape.object, usage, time.monotonic() - started)
        return web.json_response(shape.whole(choices, usage))

    async def _stream(
        self,
        request: web.Request,
        shape: _Shape,
        prompt_ids: list[int],
        base: Sampling,
        n: int,
        include_usage: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        t0 = time.monotonic()
        total = 0
        started = set[int]()

        async def send(payload: dict[str, Any] | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await response.write(f"data: {data}\n\n".encode())

        try:
            async with aclosing(self._choices(prompt_ids, base, n)) as deltas:
                async for index, delta in deltas:
                    if index not in started:
                        started.add(index)
                        if (first := shape.first_chunk(index)) is not None:
                            await send(_with_usage(first, include_usage))
                    if delta.text:
                        await send(_with_usage(shape.chunk(index, delta.text, None), include_usage))
                    if delta.finish_reason:
                        total += delta.completion_tokens
                        chunk = shape.chunk(index, "", delta.finish_reason)
                        await send(_with_usage(chunk, include_usage))
            usage = _usage(len(prompt_ids), total)
            if include_usage:
                await send(shape.usage_chunk(usage))
            await response.write(protocol.USAGE_COMMENT + json.dumps(usage).encode() + b"\n\n")
            await send("[DONE]")
            log.info("%s stream: %s tokens in %.2fs", shape.object, usage, time.monotonic() - t0)
        except ConnectionResetError:
            log.info("client went away during a stream; generation stopped")
        except Exception as exc:  # the stream is open: report in-band, keep the engine
            log.exception("generation failed during a stream")
            body = protocol.error_body(f"generation failed: {exc}", "server_error", "engine_error")
            try:
                await send(body)
            except ConnectionResetError:
                pass
        return response


def _chat_chars(body: ChatCompletionRequest) -> int:
    total = 0
    for m in body.messages:
        if isinstance(m.content, str):
            total += len(m.content)
        elif m.content:
            total += sum(len(p.text) for p in m.content if isinstance(p, protocol.TextPart))
    return total


def _render_message(i: int, message: protocol.ChatMessage) -> dict[str, str]:
    content = message.content
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        parts: list[str] = []
        for part in content:
            if not isinstance(part, protocol.TextPart):
                raise RequestError(
                    400,
                    "this model takes text only; image parts are not supported",
                    code="image_input_unsupported",
                    param=f"messages.{i}.content",
                )
            parts.append(part.text)
        text = "\n".join(parts)
    role = "system" if message.role == "developer" else message.role
    out = {"role": role, "content": text}
    if message.name:
        out["name"] = message.name
    return out


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _with_usage(chunk: dict[str, Any], include_usage: bool) -> dict[str, Any]:
    if include_usage:
        chunk["usage"] = None
    return chunk


class _Shape:
    """OpenAI's response and chunk objects for one kind of completion."""

    object = ""
    chunk_object = ""
    id_prefix = ""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = f"{self.id_prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _head(self, object: str) -> dict[str, Any]:
        return {"id": self.id, "object": object, "created": self.created, "model": self.model}

    def whole(self, choices: Sequence[_Choice], usage: dict[str, int]) -> dict[str, Any]:
        return {
            **self._head(self.object),
            "choices": [self.choice(c) for c in choices],
            "usage": usage,
        }

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        return {**self._head(self.chunk_object), "choices": [], "usage": usage}

    def choice(self, c: _Choice) -> dict[str, Any]:
        raise NotImplementedError

    def first_chunk(self, index: int) -> dict[str, Any] | None:
        return None

    def chunk(self, index: int, text: str, finish: str | None) -> dict[str, Any]:
        raise NotImplementedError


class _CompletionShape(_Shape):
    object = chunk_object = "text_completion"
    id_prefix = "cmpl"

    def choice(self, c: _Choice) -> dict[str, Any]:
        return {
            "index": c.index,
            "text": "".join(c.text),
            "logprobs": None,
            "finish_reason": c.finish_reason,
        }

    def chunk(self, index: int, text: str, finish: str | None) -> dict[str, Any]:
        choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
        return {**self._head(self.chunk_object), "choices": [choice]}


class _ChatShape(_Shape):
    object = "chat.completion"
    chunk_object = "chat.completion.chunk"
    id_prefix = "chatcmpl"

    def choice(self, c: _Choice) -> dict[str, Any]:
        message = {"role": "assistant", "content": "".join(c.text), "refusal": None}
        return {
            "index": c.index,
            "message": message,
            "logprobs": None,
            "finish_reason": c.finish_reason,
        }

    def first_chunk(self, index: int) -> dict[str, Any]:
        return self._delta(index, {"role": "assistant", "content": ""}, None)

    def chunk(self, index: int, text: str, finish: str | None) -> dict[str, Any]:
        return self._delta(index, {"content": text} if text or not finish else {}, finish)

    def _delta(self, index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**self._head(self.chunk_object), "choices": [choice]}
