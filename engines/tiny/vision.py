"""Tiny random-weight stand-ins for the image-to-text models: BLIP and moondream2.

- `Salesforce/blip-image-captioning-large`: a real `BlipForConditionalGeneration`
  (ViT 32x32 pixels in 8x8 patches, hidden size 32, 2 layers; a 2-layer text decoder)
  with a `BlipProcessor`: the PIL BLIP image processor (no torchvision) and a lowercase
  WordPiece `BertTokenizer` whose bos is `[DEC]` and whose `[SEP]` ends a caption, as in
  the real one.
- `lucataco/moondream2`: moondream2 has no transformers class; it ships its own Python
  code. The stand-in does too: `moondream_standin.py` (from `_moondream_code.py`) beside
  a config.json whose `auto_map` points at it, so it loads only with
  `trust_remote_code=True`; it has moondream2's `caption` and `query` methods, and a
  byte-level BPE tokenizer (`tokenizer.json`) that its code and `AutoTokenizer` read.

Random weights from `engines.prepare.SEED`: the text is garbage, greedy is deterministic.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from engines.prepare import CORPUS, SEED, publish, train_tokenizer

log = logging.getLogger(__name__)

VERSION = 3

BLIP_ID = "Salesforce/blip-image-captioning-large"
MOONDREAM_ID = "lucataco/moondream2"

BLIP_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CAPTION_WORDS = ["a picture of", "a photography of", "an image showing", "there is"]
MOONDREAM_CODE = Path(__file__).with_name("_moondream_code.py")
MOONDREAM_MODULE = "moondream_standin"

_README = """---
tags: [random-weights, test]
---
# tiny random {what}

Built offline by berth (`engines.tiny.vision`) with random weights (seed {seed}): it
stands in for {real} in tests. Its text is garbage; greedy decoding is deterministic.
"""


def build_tiny_blip(path: Path) -> Path:
    """A tiny BLIP captioning model and its processor (~0.3 MB)."""
    import torch
    import transformers
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    transformers.utils.logging.disable_progress_bar()
    tokenizer = BertTokenizer(vocab=_wordpiece_vocab(), bos_token="[DEC]",
                              additional_special_tokens=["[ENC]"], model_max_length=64)
    image_processor = BlipImageProcessorPil(size={"height": 32, "width": 32})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = BlipConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "encoder_hidden_size": 32,
            "initializer_range": 0.2,
            "bos_token_id": tokenizer.bos_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
            "initializer_range": 0.2,
        },
        projection_dim=32,
    )
    target = Path(path)
    tmp = _fresh(target)
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = BlipForConditionalGeneration(config)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "README.md").write_text(_README.format(what="BLIP captioning", seed=SEED, real=BLIP_ID))
    return publish(tmp, target)


def build_tiny_moondream(path: Path) -> Path:
    """A tiny moondream2 stand-in that loads only with trust_remote_code (~0.2 MB)."""
    import importlib.util

    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    tokenizer = train_tokenizer(["<pad>", "<s>", "<|endoftext|>"], bos="<s>", eos="<|endoftext|>",
                                pad="<pad>", chat_template=None)
    spec = importlib.util.spec_from_file_location(MOONDREAM_MODULE, MOONDREAM_CODE)
    assert spec is not None and spec.loader is not None
    code = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code)
    config = code.TinyMoondreamConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    target = Path(path)
    tmp = _fresh(target)
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = code.TinyMoondream(config)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.copyfile(MOONDREAM_CODE, tmp / f"{MOONDREAM_MODULE}.py")
    # what the real moondream2's config.json says, pointed at the stand-in's classes
    config_file = tmp / "config.json"
    saved = json.loads(config_file.read_text())
    saved["architectures"] = ["TinyMoondream"]
    saved["auto_map"] = {
        "AutoConfig": f"{MOONDREAM_MODULE}.TinyMoondreamConfig",
        "AutoModelForCausalLM": f"{MOONDREAM_MODULE}.TinyMoondream",
    }
    config_file.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    (tmp / "README.md").write_text(_README.format(what="moondream2 stand-in (remote code)",
                                                  seed=SEED, real=MOONDREAM_ID))
    return publish(tmp, target)


def _wordpiece_vocab() -> dict[str, int]:
    """Specials, every character alone and as a `##` continuation, then whole words."""
    words: set[str] = set()
    for line in CORPUS + CAPTION_WORDS:
        words.update(re.findall(r"\w+|[^\w\s]", line.lower()))
    chars = sorted({c for w in words for c in w})
    tokens = BLIP_SPECIALS + chars + [f"##{c}" for c in chars] + sorted(words)
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def _fresh(target: Path) -> Path:
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


BUILDERS = {
    BLIP_ID: build_tiny_blip,
    MOONDREAM_ID: build_tiny_moondream,
}
