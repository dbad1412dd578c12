"""The embeddings task: a sentence-transformers style encoder behind /v1/embeddings.

Pooling and normalisation follow the model folder's sentence-transformers files
(`1_Pooling/config.json`, `modules.json`); a plain encoder folder gets mean pooling
without normalisation. Always float32: embeddings are compared by small differences.
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
from transformers import AutoModel

from engines.base import (
    RequestError,
    Worker,
    load_pretrained,
    sane_length,
)
from engines.protocol import EmbeddingRequest, EngineSpec

log = logging.getLogger(__name__)

BATCH = 32


def load(spec: EngineSpec, worker: Worker) -> EmbeddingEngine:
    """Loads tokenizer and encoder from spec.model_path (local files only); blocking."""
    tokenizer, model, _, _ = load_pretrained(spec, AutoModel, dtype=torch.float32)
    folder = Path(spec.model_path)
    engine = EmbeddingEngine(spec, model, tokenizer, worker, folder_settings(folder))
    log.info(
        "loaded %s (%s, dim %d, pooling %s, normalize %s, max %s tokens)",
        folder,
        type(model).__name__,
        engine.dimensions,
        engine.pooling,
        engine.normalize,
        engine.context_length,
    )
    return engine


def folder_settings(folder: Path) -> dict[str, Any]:
    """Pooling, normalisation and max length from a sentence-transformers folder."""
    settings: dict[str, Any] = {"pooling": "mean", "normalize": False, "max_seq_length": None}
    modules = _read_json(folder / "modules.json") or []
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith(".Normalize"):
            settings["normalize"] = True
        if kind.endswith(".Pooling"):
            pooling = _read_json(folder / str(module.get("path", "")) / "config.json") or {}
            if pooling.get("pooling_mode_cls_token"):
                settings["pooling"] = "cls"
            elif not pooling.get("pooling_mode_mean_tokens", True):
                log.warning("unsupported pooling %s; using mean pooling", pooling)
    bert = _read_json(folder / "sentence_bert_config.json") or {}
    settings["max_seq_length"] = bert.get("max_seq_length")
    return settings


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class EmbeddingEngine:
    def __init__(
        self, spec: EngineSpec, model: Any, tokenizer: Any, worker: Worker, settings: dict[str, Any]
    ) -> None:
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.worker = worker
        self.pooling: str = settings["pooling"]
        self.normalize: bool = settings["normalize"]
        self.dimensions = int(model.config.hidden_size)
        self.vocab_size = int(model.get_input_embeddings().num_embeddings)
        self._wrap = _special_wrapping(tokenizer)
        self.context_length = sane_length(
            settings["max_seq_length"],
            getattr(model.config, "max_position_embeddings", None),
            getattr(tokenizer, "model_max_length", None),
        )

    def close(self) -> None:
        pass

    async def handle(self, route: str, body: BaseModel, request: web.Request) -> web.StreamResponse:
        if not isinstance(body, EmbeddingRequest):
            raise RequestError(400, f"{route} is not an embeddings route",
                               code="unsupported_route")
        if body.dimensions is not None and body.dimensions != self.dimensions:
            raise RequestError(
                400,
                f"dimensions: this model makes {self.dimensions}-dimensional embeddings only",
                code="unsupported_value",
                param="dimensions",
            )
        started = time.monotonic()
        # tokenizing runs off the event loop: the health route must keep answering
        inputs = await asyncio.to_thread(self._token_ids, body.input)
        vectors = await self.worker.submit(self._embed, inputs)
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ]
        tokens = sum(len(ids) for ids in inputs)
        log.info(
            "embeddings: %d inputs, %d tokens in %.2fs",
            len(inputs),
            tokens,
            time.monotonic() - started,
        )
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": self.spec.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def _token_ids(self, raw: str | list[str] | list[int] | list[list[int]]) -> list[list[int]]:
        items: list[Any] = [raw] if isinstance(raw, str) else list(raw)
        if items and isinstance(items[0], int):
            items = [items]
        budget = self.spec.embedding_max_tokens
        given = sum(len(item) for item in items if isinstance(item, list))
        if given > budget:  # token arrays: known too long before any work
            raise _over_budget(given, budget, exact=False)
        out: list[list[int]] = []
        total = 0
        for i, item in enumerate(items):
            if isinstance(item, str):
                ids = list(self.tokenizer(item, add_special_tokens=True).input_ids)
            else:
                if not item:
                    raise RequestError(400, f"input: token array {i} is empty",
                                       code="invalid_value", param="input")
                bad = [t for t in item if not 0 <= t < self.vocab_size]
                if bad:
                    raise RequestError(
                        400,
                        f"input: token id {bad[0]} is outside the vocabulary "
                        f"(0..{self.vocab_size - 1})",
                        code="invalid_value",
                        param="input",
                    )
                ids = self._wrap[0] + list(item) + self._wrap[1]
            total += len(ids)
            if total > budget:  # stop tokenizing: the request is refused anyway
                raise _over_budget(total, budget, exact=i == len(items) - 1)
            if self.context_length is not None and len(ids) > self.context_length:
                raise RequestError(
                    400,
                    f"input {i} has {len(ids)} tokens; this model's maximum is "
                    f"{self.context_length} tokens",
                    code="context_length_exceeded",
                    param="input",
                )
            out.append(ids)
        return out

    def _embed(self, inputs: list[list[int]]) -> list[np.ndarray]:
        vectors: list[np.ndarray] = []
        pad = self.tokenizer.pad_token_id or 0
        for start in range(0, len(inputs), BATCH):
            batch = inputs[start : start + BATCH]
            width = max(len(ids) for ids in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, x in enumerate(batch):
                ids[row, : len(x)] = torch.tensor(x, dtype=torch.long)
                mask[row, : len(x)] = 1
            ids, mask = ids.to(self.model.device), mask.to(self.model.device)
            with torch.inference_mode():
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    weights = mask.unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            vectors.extend(pooled.float().cpu().numpy())
        return vectors


def _over_budget(tokens: int, budget: int, *, exact: bool) -> RequestError:
    counted = f"{tokens} tokens" if exact else f"more than {budget} tokens"
    return RequestError(
        400,
        f"input: this request has {counted}; this deployment embeds at most {budget} tokens "
        "per request (all inputs together): split the inputs across several requests",
        code="max_tokens_per_request",
        param="input",
    )


def _special_wrapping(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text ([CLS] .. [SEP])."""
    bare = list(tokenizer("hello world", add_special_tokens=False).input_ids)
    full = list(tokenizer("hello world", add_special_tokens=True).input_ids)
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    return [], []


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
