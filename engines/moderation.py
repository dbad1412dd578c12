"""The moderation task: Llama Guard 2 behind /v1/moderations, and its verdict as chat.

The guard is a causal LM whose chat template turns a conversation into its task
prompt; it answers `safe`, or `unsafe` and a line of violated codes (`S1,S10`). Chat
(/v1/chat/completions) is the text engine unchanged: the verdict comes back as the
assistant's text. /v1/moderations renders each input as one user turn, decodes the
verdict greedily and answers in OpenAI's shape:

    {"id": "modr-...", "model": <endpoint>, "results": [{"flagged", "categories",
     "category_scores", "category_applied_input_types", "llama_guard"}], "usage"}

Llama Guard 2's codes (MLCommons hazard taxonomy) and the OpenAI categories they set:

    S1  Violent Crimes          violence, illicit/violent
    S2  Non-Violent Crimes      illicit
    S3  Sex Crimes              sexual, illicit
    S4  Child Exploitation      sexual, sexual/minors
    S5  Specialized Advice      (none)
    S6  Privacy                 (none)
    S7  Intellectual Property   (none)
    S8  Indiscriminate Weapons  violence, illicit/violent
    S9  Hate                    hate
    S10 Self-Harm               self-harm
    S11 Sexual Content          sexual

A verdict naming only S5, S6 or S7 is `flagged` with every OpenAI category false; the
berth field `llama_guard` always carries the verdict, the codes, their names and the
raw output. The guard never sets harassment, harassment/threatening, hate/threatening,
self-harm/intent, self-harm/instructions or violence/graphic.

Scores: `llama_guard.unsafe_probability` is the probability that the first generated
token is the first token of "unsafe" (as the Llama Guard paper scores it). Each category
the verdict sets scores that probability; the others score 0.0.

An output that is neither `safe` nor `unsafe` (random weights, a model that is no
guard) is not flagged, scores 0.0 everywhere, and says `"verdict": "unparseable"`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import torch
from aiohttp import web
from pydantic import BaseModel
from transformers import AutoModelForCausalLM

from engines.base import RequestError, Worker, load_pretrained
from engines.generate import Generator
from engines.protocol import ChatCompletionRequest, EngineSpec, ModerationRequest
from engines.text import TextEngine

log = logging.getLogger(__name__)

# "unsafe\nS1,S2,...,S11" with room for spaces: the longest sensible verdict.
VERDICT_TOKENS = 48

GUARD_CODES: dict[str, str] = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex Crimes",
    "S4": "Child Exploitation",
    "S5": "Specialized Advice",
    "S6": "Privacy",
    "S7": "Intellectual Property",
    "S8": "Indiscriminate Weapons",
    "S9": "Hate",
    "S10": "Self-Harm",
    "S11": "Sexual Content",
}

OPENAI_CATEGORIES: tuple[str, ...] = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
    "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent", "sexual",
    "sexual/minors", "violence", "violence/graphic",
)

CODE_CATEGORIES: dict[str, tuple[str, ...]] = {
    "S1": ("violence", "illicit/violent"),
    "S2": ("illicit",),
    "S3": ("sexual", "illicit"),
    "S4": ("sexual", "sexual/minors"),
    "S5": (),
    "S6": (),
    "S7": (),
    "S8": ("violence", "illicit/violent"),
    "S9": ("hate",),
    "S10": ("self-harm",),
    "S11": ("sexual",),
}

SAFE, UNSAFE, UNPARSEABLE = "safe", "unsafe", "unparseable"
_FIRST_WORD = re.compile(r"\s*(unsafe|safe)\b", re.IGNORECASE)
_CODE = re.compile(r"\bS(\d{1,2})\b", re.IGNORECASE)


@dataclass(frozen=True)
class Verdict:
    verdict: str  # safe | unsafe | unparseable
    codes: tuple[str, ...] = ()


def parse_verdict(output: str) -> Verdict:
    """The guard's answer: `safe`, or `unsafe` then the codes (on the next line, or
    the same one); anything else is unparseable. Unknown codes are dropped."""
    match = _FIRST_WORD.match(output)
    if match is None:
        return Verdict(UNPARSEABLE)
    if match.group(1).lower() == SAFE:
        return Verdict(SAFE)
    codes = [f"S{int(n)}" for n in _CODE.findall(output[match.end():])]
    return Verdict(UNSAFE, tuple(dict.fromkeys(c for c in codes if c in GUARD_CODES)))


def moderation_result(verdict: Verdict, unsafe_probability: float,
                      output: str) -> dict[str, Any]:
    """One entry of `results`, in OpenAI's shape plus the `llama_guard` details."""
    named = {c for code in verdict.codes for c in CODE_CATEGORIES[code]}
    score = unsafe_probability if verdict.verdict != UNPARSEABLE else 0.0
    return {
        "flagged": verdict.verdict == UNSAFE,
        "categories": {c: c in named for c in OPENAI_CATEGORIES},
        "category_scores": {c: score if c in named else 0.0 for c in OPENAI_CATEGORIES},
        "category_applied_input_types": {
            c: ["text"] if c in named else [] for c in OPENAI_CATEGORIES
        },
        "llama_guard": {
            "verdict": verdict.verdict,
            "codes": list(verdict.codes),
            "names": [GUARD_CODES[c] for c in verdict.codes],
            "unsafe_probability": unsafe_probability,
            "output": output,
        },
    }


def load(spec: EngineSpec, worker: Worker) -> ModerationEngine:
    """Loads the guard from spec.model_path (local files only); blocking."""
    tokenizer, model, dtype, device = load_pretrained(spec, AutoModelForCausalLM)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{spec.model_path} has no chat template: a moderation model needs "
                         "one that renders its guard prompt (like Llama Guard's)")
    log.info("loaded %s (%s, %s on %s)", spec.model_path, type(model).__name__, dtype, device)
    return ModerationEngine(spec, TextEngine(spec, Generator(model, tokenizer, worker)))


class ModerationEngine:
    def __init__(self, spec: EngineSpec, text: TextEngine) -> None:
        self.spec = spec
        self.text = text
        self.context_length = text.context_length
        tokenizer = text.tokenizer
        # The first token of "unsafe" as the guard would write it (with or without a
        # leading space); its probability at the first step is the unsafe score.
        firsts = {ids[0] for word in ("unsafe", " unsafe")
                  if (ids := tokenizer(word, add_special_tokens=False).input_ids)}
        self.unsafe_first_ids = sorted(firsts)

    def close(self) -> None:
        self.text.close()

    async def handle(self, route: str, body: BaseModel, request: web.Request) -> web.StreamResponse:
        if not isinstance(body, ModerationRequest):
            return await self.text.handle(route, body, request)
        started = time.monotonic()
        inputs = body.inputs()
        for text in inputs:
            self.text._refuse_if_surely_too_long(len(text), "input")
        prompts = await asyncio.to_thread(self._prompts, inputs)
        results: list[dict[str, Any]] = []
        completion = 0
        for ids in prompts:
            greedy = await self.text.gen.greedy(ids, VERDICT_TOKENS)
            completion += len(greedy.ids)
            p_unsafe = float(torch.exp(greedy.first_logprobs[self.unsafe_first_ids]).sum())
            results.append(moderation_result(parse_verdict(greedy.text), p_unsafe, greedy.text))
        prompt = sum(len(ids) for ids in prompts)
        flagged = sum(r["flagged"] for r in results)
        log.info("moderations: %d inputs, %d flagged, %d+%d tokens in %.2fs", len(inputs),
                 flagged, prompt, completion, time.monotonic() - started)
        return web.json_response({
            "id": f"modr-{uuid.uuid4().hex}",
            "model": self.spec.name,
            "results": results,
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        })

    def _prompts(self, inputs: list[str]) -> list[list[int]]:
        """The guard prompt of each input (one user turn), checked against the context."""
        out = []
        for i, text in enumerate(inputs):
            chat = ChatCompletionRequest.model_validate(
                {"messages": [{"role": "user", "content": text}]})
            ids = self.text._chat_prompt(chat)
            ctx = self.context_length
            if ctx is not None and len(ids) + VERDICT_TOKENS > ctx:
                raise RequestError(
                    400,
                    f"input {i}: its guard prompt has {len(ids)} tokens; with "
                    f"{VERDICT_TOKENS} for the verdict that is over this model's maximum "
                    f"context length of {ctx} tokens",
                    code="context_length_exceeded", param="input")
            out.append(ids)
        return out
