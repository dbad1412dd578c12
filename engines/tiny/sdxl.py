"""Tiny random-weight stand-ins for SDXL base 1.0 and SDXL turbo (diffusers pipelines).

Each builder writes a diffusers pipeline folder shaped like the real one
(`model_index.json` + unet/vae/text_encoder/text_encoder_2/tokenizer/tokenizer_2/
scheduler): the real component classes and block types, the real UNet conditioning
(two CLIP text encoders whose hidden sizes add up to the UNet's cross-attention width,
`text_time` added conditioning of 6 time ids plus the pooled projection), a 4-level VAE
(so the latent is 1/8 of the image, as in the real one), and the real model's scheduler
(base: EulerDiscrete with leading spacing; turbo: EulerAncestral with trailing
spacing). Only the widths are tiny: UNet sample_size 8, so the native size is 64x64.

Weights are random (fixed seed), so the images are noise: test sizes, formats and
determinism, never what they show.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

from engines.prepare import CORPUS, SEED, publish

log = logging.getLogger(__name__)

VERSION = 2

BASE = "stabilityai/stable-diffusion-xl-base-1.0"
TURBO = "stabilityai/sdxl-turbo"

_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
_TEXT_HIDDEN = 32  # each encoder; the UNet's cross_attention_dim is their sum
_PROJECTION = 32  # text_encoder_2's pooled projection
_TIME_EMBED = 8  # addition_time_embed_dim; 6 time ids (size, crop, target size)
_MERGES = 200  # BPE merges learned for the tokenizers

# The real schedulers' configs (scheduler/scheduler_config.json of each repository).
_SCHEDULER_COMMON: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "clip_sample": False,
}
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    BASE: ("EulerDiscreteScheduler", {**_SCHEDULER_COMMON, "timestep_spacing": "leading"}),
    TURBO: ("EulerAncestralDiscreteScheduler",
            {**_SCHEDULER_COMMON, "timestep_spacing": "trailing"}),
}

README = """---
tags: [random-weights, test]
---
# tiny random {model_id}

A diffusers StableDiffusionXLPipeline with the architecture of `{model_id}` at tiny
widths (native size 64x64) and **random weights** (seed {seed}), built offline by
`engines.tiny.sdxl` for berth's tests. It draws noise.
"""


def build_base(path: Path) -> Path:
    return _build(path, BASE)


def build_turbo(path: Path) -> Path:
    return _build(path, TURBO)


BUILDERS = {BASE: build_base, TURBO: build_turbo}


def _build(path: Path, model_id: str) -> Path:
    import diffusers
    import torch
    import transformers
    from diffusers import StableDiffusionXLPipeline

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    target = Path(path)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = _tokenizer(pad=_EOS)
    tokenizer_2 = _tokenizer(pad="!")  # as in the real tokenizer_2
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        text_encoder, text_encoder_2 = _text_encoders(len(tokenizer), tokenizer)
        pipe: Any = StableDiffusionXLPipeline(
            vae=_vae(),
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=_unet(),
            scheduler=_scheduler(model_id),
            add_watermarker=False,
        )
    pipe.save_pretrained(tmp, safe_serialization=True)
    (tmp / "README.md").write_text(README.format(model_id=model_id, seed=SEED), encoding="utf-8")
    log.info("built tiny %s in %s", model_id, target)
    return publish(tmp, target)


def _tokenizer(pad: str) -> Any:
    """A CLIP tokenizer (lower-cased byte-level BPE with `</w>` word ends) whose merges
    are learned from a few sentences. Every byte, and every byte ending a word, is in
    the vocabulary, so no text maps to unknown tokens. Learned here, deterministically
    (ties broken by the pair itself), not by the `tokenizers` trainer: its tie-breaking
    changes from run to run, and so would the token ids."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {_BOS: 0, _EOS: 1}
    for token in alphabet + [c + "</w>" for c in alphabet]:
        vocab[token] = len(vocab)
    # the real CLIP normalizer and pre-tokenizer split the corpus into words
    backend = CLIPTokenizer(vocab=dict(vocab), merges=[]).backend_tokenizer
    words: Counter[tuple[str, ...]] = Counter()
    for text in CORPUS:
        for piece, _ in backend.pre_tokenizer.pre_tokenize_str(
                backend.normalizer.normalize_str(text)):
            words[(*piece[:-1], piece[-1] + "</w>")] += 1
    merges: Any = _learn_merges(words, _MERGES)  # pairs, as the tokenizers BPE wants them
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad, model_max_length=77)


def _learn_merges(words: Counter[tuple[str, ...]], count: int) -> list[tuple[str, str]]:
    """Byte-pair encoding's training: merge the most frequent adjacent pair, `count` times."""
    merges: list[tuple[str, str]] = []
    for _ in range(count):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, n in words.items():
            for pair in pairwise(word):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for word, n in words.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if word[i:i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return merges


def _text_encoders(vocab_size: int, tokenizer: Any) -> tuple[Any, Any]:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=_TEXT_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,  # the pipeline reads the penultimate hidden state
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=_PROJECTION,
        hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config), CLIPTextModelWithProjection(config)


def _unet() -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,  # latent side: 8 * 8 (VAE factor) = 64 pixels
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(2, 4, 4),
        norm_num_groups=8,
        use_linear_projection=True,
        cross_attention_dim=2 * _TEXT_HIDDEN,
        addition_embed_type="text_time",
        addition_embed_type_num_heads=4,
        addition_time_embed_dim=_TIME_EMBED,
        projection_class_embeddings_input_dim=6 * _TIME_EMBED + _PROJECTION,
    )


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),  # 4 levels: the latent is 1/8 of the image
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.13025,  # the real SDXL VAE's
        force_upcast=True,
    )


def _scheduler(model_id: str) -> Any:
    import diffusers

    class_name, config = SCHEDULERS[model_id]
    return getattr(diffusers, class_name).from_config(config)
