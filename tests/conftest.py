"""Fixtures shared by every test layer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

# Bump when engines.prepare builds different models: the cache is keyed by it.
TINY_MODELS_VERSION = 1


@dataclass(frozen=True)
class TinyModels:
    """Offline models in Hugging Face layout under `models_dir` (`<org>/<name>`)."""

    models_dir: Path
    chat: Path  # tiny random Llama with a chat template
    base: Path  # tiny random GPT-2 without a chat template
    minilm: Path  # the real sentence-transformers/all-MiniLM-L6-v2

    CHAT_ID = "berth-demo/tiny-random-llama-chat"
    BASE_ID = "berth-demo/tiny-random-gpt2-base"
    MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def tiny_models(request: pytest.FixtureRequest) -> TinyModels:
    """Builds the test models once; later sessions reuse them from the pytest cache."""
    from engines import prepare

    root = Path(request.config.cache.mkdir(f"berth-models-v{TINY_MODELS_VERSION}"))
    models = TinyModels(
        models_dir=root,
        chat=root / TinyModels.CHAT_ID,
        base=root / TinyModels.BASE_ID,
        minilm=root / TinyModels.MINILM_ID,
    )
    builders = [
        (models.chat, prepare.build_tiny_chat_model),
        (models.base, prepare.build_tiny_base_model),
        (models.minilm, prepare.place_minilm),
    ]
    for path, build in builders:
        if not prepare.is_valid_model_dir(path):
            build(path)
    return models
