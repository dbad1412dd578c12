"""Remote code of the tiny moondream2 stand-in (copied into its model folder).

`engines.tiny.vision` copies this file into the stand-in's folder as
`moondream_standin.py`, and the folder's config.json maps `AutoConfig` and
`AutoModelForCausalLM` to its classes (`auto_map`), so transformers loads it only with
`trust_remote_code=True`, exactly as it loads the real moondream2's `hf_moondream.py`.
The package never imports it (the leading underscore keeps `engines.tiny.builders`
away); it imports only torch, transformers, tokenizers and PIL.

The model has moondream2's public methods with the same shapes:
`caption(image, length="normal", stream=False, settings=None) -> {"caption": ...}` and
`query(image, question, stream=False, settings=None) -> {"answer": ...}`, where the
value is a string, or a generator of text chunks with `stream=True`; `settings` takes
`max_tokens`, `temperature` (0: greedy) and `top_p`. Inside: a patch-embedding vision
encoder and a two-layer causal transformer over [image patches; prompt; answer].
Random weights: the text is garbage, but greedy decoding is deterministic.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from PIL import Image
from tokenizers import Tokenizer
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

CAPTION_PROMPTS = {
    "short": "\n\nShort caption:",
    "normal": "\n\nCaption:",
    "long": "\n\nLong caption:",
}
DEFAULT_MAX_TOKENS = 64
DEFAULT_TEMPERATURE = 0.5
DEFAULT_TOP_P = 0.3
REPLACEMENT = "\ufffd"


class TinyMoondreamConfig(PretrainedConfig):
    model_type = "tiny_moondream"

    def __init__(
        self,
        vocab_size: int = 384,
        hidden_size: int = 32,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 2,
        image_size: int = 32,
        patch_size: int = 8,
        max_position_embeddings: int = 512,
        initializer_range: float = 0.2,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.image_size = image_size
        self.patch_size = patch_size
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        super().__init__(**kwargs)


class TinyMoondream(PreTrainedModel):
    config_class = TinyMoondreamConfig
    base_model_prefix = "moondream"

    def __init__(self, config: TinyMoondreamConfig) -> None:
        super().__init__(config)
        d = config.hidden_size
        patches = (config.image_size // config.patch_size) ** 2
        self.patch_embed = nn.Linear(3 * config.patch_size**2, d)
        self.vision_pos = nn.Parameter(torch.zeros(patches, d))
        self.token_embed = nn.Embedding(config.vocab_size, d)
        self.pos_embed = nn.Embedding(config.max_position_embeddings, d)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d, config.num_attention_heads, 2 * d, dropout=0.0,
                                       batch_first=True)
            for _ in range(config.num_hidden_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, config.vocab_size)
        self._tokenizer: Tokenizer | None = None
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if module is self:
            nn.init.normal_(self.vision_pos, std=std)

    # --- moondream2's public methods --------------------------------------------------

    def encode_image(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """(patches, hidden) embeddings of an image; an encoded image passes through."""
        if isinstance(image, torch.Tensor):
            return image
        side, p = self.config.image_size, self.config.patch_size
        rgb = image.convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
        pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
        x = pixels.reshape(side, side, 3).float().div(127.5).sub(1.0)
        x = x.reshape(side // p, p, side // p, p, 3).permute(0, 2, 1, 3, 4).reshape(-1, 3 * p * p)
        param = self.patch_embed.weight
        with torch.inference_mode():
            return self.patch_embed(x.to(param.device, param.dtype)) + self.vision_pos

    def caption(self, image: Any, length: str = "normal", stream: bool = False,
                settings: dict[str, Any] | None = None) -> dict[str, Any]:
        if length not in CAPTION_PROMPTS:
            raise ValueError(f"Model does not support caption length '{length}'.")
        chunks = self._answer(image, CAPTION_PROMPTS[length], settings)
        return {"caption": chunks if stream else "".join(chunks)}

    def query(self, image: Any, question: str, reasoning: bool = False, stream: bool = False,
              settings: dict[str, Any] | None = None) -> dict[str, Any]:
        chunks = self._answer(image, f"\n\nQuestion: {question}\n\nAnswer:", settings)
        return {"answer": chunks if stream else "".join(chunks)}

    # --- inside -------------------------------------------------------------------------

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            folder = str(self.name_or_path)  # the model folder from_pretrained read
            self._tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        return self._tokenizer

    def _answer(self, image: Any, prompt: str,
                settings: dict[str, Any] | None) -> Iterator[str]:
        settings = settings or {}
        image_embeds = self.encode_image(image)
        ids = [self.config.bos_token_id, *self.tokenizer.encode(prompt,
                                                                add_special_tokens=False).ids]
        return self._text(image_embeds, ids, int(settings.get("max_tokens", DEFAULT_MAX_TOKENS)),
                          float(settings.get("temperature", DEFAULT_TEMPERATURE)),
                          float(settings.get("top_p", DEFAULT_TOP_P)))

    def _text(self, image_embeds: torch.Tensor, prompt_ids: list[int], max_tokens: int,
              temperature: float, top_p: float) -> Iterator[str]:
        """Text chunks as tokens come; an incomplete UTF-8 character waits for the next."""
        new: list[int] = []
        sent = ""
        for token in self._tokens(image_embeds, prompt_ids, max_tokens, temperature, top_p):
            new.append(token)
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            if text.endswith(REPLACEMENT) or len(text) <= len(sent):
                continue
            yield text[len(sent):]
            sent = text
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        if len(text) > len(sent):
            yield text[len(sent):]

    def _tokens(self, image_embeds: torch.Tensor, prompt_ids: list[int], max_tokens: int,
                temperature: float, top_p: float) -> Iterator[int]:
        ids = list(prompt_ids)
        room = self.config.max_position_embeddings - image_embeds.shape[0] - len(ids)
        for _ in range(min(max_tokens, room)):
            token = self._next(image_embeds, ids, temperature, top_p)
            if token == self.config.eos_token_id:
                return
            ids.append(token)
            yield token

    def _next(self, image_embeds: torch.Tensor, ids: list[int], temperature: float,
              top_p: float) -> int:
        with torch.inference_mode():
            device = image_embeds.device
            tokens = torch.tensor(ids, device=device)
            x = torch.cat([image_embeds, self.token_embed(tokens)], dim=0)
            x = x + self.pos_embed(torch.arange(x.shape[0], device=device))
            mask = nn.Transformer.generate_square_subsequent_mask(x.shape[0], device=device)
            h = x.unsqueeze(0)
            for block in self.blocks:
                h = block(h, src_mask=mask, is_causal=True)
            logits = self.lm_head(self.norm(h[0, -1])).float()
            if temperature <= 0:
                return int(torch.argmax(logits))
            probs = torch.softmax(logits / temperature, dim=-1)
            if top_p < 1.0:
                sorted_probs, order = torch.sort(probs, descending=True)
                drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > top_p
                sorted_probs[drop] = 0.0
                return int(order[torch.multinomial(sorted_probs, 1)])
            return int(torch.multinomial(probs, 1))
