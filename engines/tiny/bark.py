"""A tiny random-weight Bark (transformers' BarkModel) standing in for suno/bark.

The folder has the real layout: `config.json` of a BarkModel (semantic, coarse and fine
GPT-style transformers plus an EnCodec codec at 24 kHz), `generation_config.json` with
the three sub-configs, a tokenizer, and speaker presets the way BarkProcessor loads them
offline: `speaker_embeddings_path.json` naming `speaker_embeddings/v2/*.npy` files.

Kept real, because generation hard-codes them: the vocab sizes (text ids are offset by
10 048, semantic ids below 10 000, codebooks of 1024), the EnCodec hop of 320 samples at
24 kHz and its 32 quantizers. Shrunk: one layer, hidden size 8, and at most
`SEMANTIC_MAX_NEW_TOKENS` semantic tokens (about half a second of audio).

The audio is noise: test shapes, types, lengths, formats and determinism.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from engines.prepare import SEED, publish, train_tokenizer

log = logging.getLogger(__name__)

VERSION = 2

MODEL_ID = "suno/bark"
SAMPLE_RATE = 24_000
SEMANTIC_MAX_NEW_TOKENS = 24
# The English v2 presets of the real folder; each tiny one is a few hundred random codes.
PRESETS = tuple(f"v2/en_speaker_{i}" for i in range(10))
EMBEDDINGS_DIR = "speaker_embeddings"

_SUB_MODEL: dict[str, Any] = {
    "num_layers": 1,
    "num_heads": 2,
    "hidden_size": 8,
    "block_size": 1024,
    "initializer_range": 0.2,
}
# Real Bark: the semantic model reads text ids (offset 10 048) and semantic ids; the
# coarse model semantic ids and two codebooks; the fine model eight codebooks.
_VOCABS = {
    "semantic_config": (129_600, 10_048),
    "coarse_acoustics_config": (12_096, 12_096),
    "fine_acoustics_config": (1_056, 1_056),
}
_CODEC: dict[str, Any] = {
    "sampling_rate": SAMPLE_RATE,
    "upsampling_ratios": [8, 5, 4, 2],
    "target_bandwidths": [1.5, 3.0, 6.0, 12.0, 24.0],
    "codebook_size": 1024,
    "hidden_size": 8,
    "num_filters": 2,
    "num_residual_layers": 1,
    "num_lstm_layers": 1,
}
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
README = """---
license: mit
tags: [random-weights, test]
---
# tiny random Bark

A transformers BarkModel with **random weights** (seed {seed}), one layer per
sub-model, an EnCodec codec at 24 kHz and ten tiny `v2/en_speaker_*` presets. It
produces noise; it exists to exercise berth's speech route offline.
"""


def build_tiny_bark(path: Path) -> Path:
    """Writes the tiny Bark folder at `path` (about 10 MB) and returns it."""
    import torch
    import transformers
    from transformers import BarkConfig, BarkModel, EncodecConfig, GenerationConfig
    from transformers.models.bark.configuration_bark import (
        BarkCoarseConfig,
        BarkFineConfig,
        BarkSemanticConfig,
    )

    transformers.utils.logging.disable_progress_bar()
    target = Path(path)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    def sub(cls: Any, key: str) -> Any:
        inputs, outputs = _VOCABS[key]
        return cls(input_vocab_size=inputs, output_vocab_size=outputs, **_SUB_MODEL)

    config = BarkConfig(
        semantic_config=sub(BarkSemanticConfig, "semantic_config"),
        coarse_acoustics_config=sub(BarkCoarseConfig, "coarse_acoustics_config"),
        fine_acoustics_config=sub(BarkFineConfig, "fine_acoustics_config"),
        codec_config=EncodecConfig(**_CODEC),
    )
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = BarkModel(config)
        # EnCodec's codebooks start as zeros (they are learnt by k-means): every code
        # would then decode to the same sound, and seeds could not change the audio.
        for codebook in model.codec_model.quantizer.layers:
            codebook.codebook.embed.normal_()
    # BarkGenerationConfig.save_pretrained fails (no `early_stopping`): a plain
    # GenerationConfig carrying the three sub-configs loads back the same way.
    model.generation_config = GenerationConfig(
        semantic_config={"max_new_tokens": SEMANTIC_MAX_NEW_TOKENS},
        coarse_acoustics_config={},
        fine_acoustics_config={},
        sample_rate=SAMPLE_RATE,
        codebook_size=1024,
    )
    model.save_pretrained(tmp)

    tokenizer = train_tokenizer(_SPECIALS, bos="[CLS]", eos="[SEP]", pad="[PAD]",
                                chat_template=None)
    tokenizer.save_pretrained(tmp)
    _write_presets(tmp)
    (tmp / "README.md").write_text(README.format(seed=SEED), encoding="utf-8")
    return publish(tmp, target)


def _write_presets(folder: Path) -> None:
    """Random semantic (N,), coarse (2, M) and fine (8, M) prompts per preset."""
    rng = np.random.default_rng(SEED)
    index: dict[str, Any] = {"repo_or_path": "."}
    (folder / EMBEDDINGS_DIR / "v2").mkdir(parents=True)
    for preset in PRESETS:
        arrays = {
            "semantic_prompt": rng.integers(0, 10_000, size=(40,), dtype=np.int64),
            "coarse_prompt": rng.integers(0, 1024, size=(2, 60), dtype=np.int64),
            "fine_prompt": rng.integers(0, 1024, size=(8, 60), dtype=np.int64),
        }
        entry = {}
        for key, array in arrays.items():
            relative = f"{EMBEDDINGS_DIR}/{preset}_{key}.npy"
            np.save(folder / relative, array, allow_pickle=False)
            entry[key] = relative
        index[preset] = entry
    (folder / "speaker_embeddings_path.json").write_text(json.dumps(index, indent=1) + "\n",
                                                         encoding="utf-8")


BUILDERS = {MODEL_ID: build_tiny_bark}
