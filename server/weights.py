"""Where a model's weights are on this machine, and what task they serve.

Weights come from `models_dir/<org>/<name>` (Hugging Face layout), an absolute folder,
or the Hugging Face cache, offline. Nothing here imports torch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from engines.protocol import Task

log = logging.getLogger(__name__)

_TEXT_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_EMBEDDING_ARCHS = {"BertModel", "RobertaModel", "XLMRobertaModel", "MPNetModel",
                    "DistilBertModel", "NomicBertModel"}


class WeightsNotFound(LookupError):
    pass


def find_weights(model: str, models_dir: Path) -> Path:
    """The folder holding `model`'s config and weights; WeightsNotFound if none."""
    candidates = []
    as_path = Path(model)
    if as_path.is_absolute():
        candidates.append(as_path)
    elif ".." not in as_path.parts:
        candidates.append(models_dir / as_path)
    for folder in candidates:
        if (folder / "config.json").is_file():
            return folder
    cached = _from_hf_cache(model)
    if cached is not None:
        return cached
    raise WeightsNotFound(
        f"weights for {model!r} are not in {models_dir} nor in the Hugging Face cache")


def _from_hf_cache(model: str) -> Path | None:
    if model.count("/") != 1:
        return None
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return None
    try:
        folder = Path(snapshot_download(model, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None
    return folder if (folder / "config.json").is_file() else None


def infer_task(folder: Path) -> Task | None:
    """The task a Hugging Face folder serves, from its files; None when unknown."""
    markers = ("modules.json", "config_sentence_transformers.json")
    if any((folder / m).is_file() for m in markers):
        return Task.EMBEDDINGS
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for arch in config.get("architectures") or []:
        if arch.endswith(_TEXT_SUFFIXES):
            return Task.TEXT
        if arch in _EMBEDDING_ARCHS:
            return Task.EMBEDDINGS
    return None
