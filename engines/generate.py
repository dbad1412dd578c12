"""Runs `model.generate` on the worker thread and streams its text to the event loop.

Tokens cross from the worker thread to the loop through a streamer that calls
`loop.call_soon_threadsafe`; the loop side turns them into text with the pure
`textstream` classes. A `threading.Event` checked by a stopping criterion ends a
generation within one token: set when the client goes away, when a stop string
matched, or when the engine shuts down.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from engines.base import Worker
from engines.textstream import IncrementalDetokenizer, StopMatcher

log = logging.getLogger(__name__)

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
# Temperatures this low overflow the softmax; they mean "greedy" anyway.
GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stops: tuple[str, ...] = ()


@dataclass(frozen=True)
class Greedy:
    """A whole greedy continuation, with the log-probabilities of its first step."""

    ids: list[int]
    text: str
    first_logprobs: torch.Tensor  # (vocab,) float32, on the CPU


@dataclass(frozen=True)
class Delta:
    """A piece of generated text; the last one of a generation carries its finish."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0


class _LoopStreamer(BaseStreamer):
    """Hands each new token id to the event loop; the first `put` is the prompt."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sink: asyncio.Queue[list[int] | None]):
        self._loop = loop
        self._sink = sink
        self._seen_prompt = False
        self._ended = False
        self.tokens = 0

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        ids = value.reshape(-1).tolist()
        self.tokens += len(ids)
        self._send(ids)

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._send(None)

    def _send(self, item: list[int] | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._sink.put_nowait, item)
        except RuntimeError:  # loop closed: nobody is listening any more
            pass


class _Cancelled(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        stop = self._event.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool)  # type: ignore[return-value]


def _retrieve(future: asyncio.Future[None]) -> None:
    # A generation abandoned by its client may still fail; log it, don't warn about it.
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.warning("abandoned generation failed: %r", exc)


class Generator:
    """Generates text for one prompt at a time on the engine's worker thread."""

    def __init__(self, model: Any, tokenizer: Any, worker: Worker) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.worker = worker
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids: list[int] = (
            [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        )
        pad = model.generation_config.pad_token_id
        if pad is None:
            pad = tokenizer.pad_token_id
        self.pad_id: int | None = (
            pad if pad is not None else (self.eos_ids[0] if self.eos_ids else None)
        )
        self._shutdown = threading.Event()

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def close(self) -> None:
        """Ends any running generation at its next token."""
        self._shutdown.set()

    async def generate(
        self, prompt_ids: list[int], sampling: Sampling
    ) -> AsyncGenerator[Delta, None]:
        """Text deltas for one completion of `prompt_ids`; the last one has finish_reason."""
        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue[list[int] | None] = asyncio.Queue()
        cancel = threading.Event()
        streamer = _LoopStreamer(loop, tokens)
        done = self.worker.submit(self._run, prompt_ids, sampling, streamer, cancel)
        detok = IncrementalDetokenizer(self.decode)
        stopper = StopMatcher(sampling.stops)
        finished = False
        try:
            while (ids := await tokens.get()) is not None:
                text = stopper.feed(detok.push(ids))
                if stopper.stopped:
                    cancel.set()
                if text:
                    yield Delta(text)
                if stopper.stopped:
                    break
            await done  # re-raises what generate raised
            ids = detok.ids
            text = stopper.feed(detok.flush()) + stopper.flush()
            ended_on_eos = bool(ids) and ids[-1] in self.eos_ids
            finish = FINISH_STOP if stopper.stopped or ended_on_eos else FINISH_LENGTH
            finished = True
            yield Delta(text, finish, len(ids))
        finally:
            if not finished:
                log.info("generation abandoned after %d tokens; stopping it", len(detok.ids))
            cancel.set()
            done.add_done_callback(_retrieve)

    async def greedy(self, prompt_ids: list[int], max_new_tokens: int) -> Greedy:
        """The greedy continuation of `prompt_ids`, whole (classifiers such as Llama
        Guard read a verdict from it and a score from its first step)."""
        return await self.worker.submit(self._greedy, prompt_ids, max_new_tokens)

    def _greedy(self, prompt_ids: list[int], max_new_tokens: int) -> Greedy:
        if self._shutdown.is_set():
            raise RuntimeError("the engine is shutting down")
        config = self._config(Sampling(max_new_tokens, temperature=0.0))
        config.output_logits = config.return_dict_in_generate = True
        input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.model.device)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([_Cancelled(self._shutdown)]),
            )
        ids = out.sequences[0, len(prompt_ids) :].tolist()
        first = torch.log_softmax(out.logits[0][0].float(), dim=-1).cpu()
        return Greedy(ids, self.decode(ids), first)

    def _run(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        streamer: _LoopStreamer,
        cancel: threading.Event,
    ) -> None:
        try:
            if self._shutdown.is_set():
                raise RuntimeError("the engine is shutting down")
            if cancel.is_set():  # abandoned while it waited for its turn
                return
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.model.device)
            with torch.inference_mode():
                self.model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    generation_config=self._config(sampling),
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList(
                        [_Cancelled(cancel), _Cancelled(self._shutdown)]
                    ),
                )
            if cancel.is_set():
                log.info("generation cancelled after %d new tokens", streamer.tokens)
            else:
                log.debug("generate returned after %d new tokens", streamer.tokens)
        finally:
            streamer.end()

    def _config(self, sampling: Sampling) -> GenerationConfig:
        # Every knob is explicit: the request decides, not the checkpoint's defaults.
        knobs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "min_new_tokens": 0,
            "num_beams": 1,
            "repetition_penalty": 1.0,
            "eos_token_id": self.eos_ids or None,
            "pad_token_id": self.pad_id,
        }
        if sampling.temperature > GREEDY_BELOW:
            knobs.update(
                do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0
            )
        else:
            knobs.update(do_sample=False)
        return GenerationConfig(**knobs)
