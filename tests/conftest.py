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


class TinyZoo:
    """Tiny random stand-ins (engines.tiny) placed under their real catalog ids.

    `zoo.path(model_id)` builds the model the first time it is asked for and keeps it
    in the pytest cache, keyed by its builder module's VERSION. Every model lives under
    its own `<version dir>/<catalog id>`; `zoo.models_dir(*ids)` gives a folder that
    holds exactly those models (symlinks), ready to be a server's `models_dir`.
    """

    def __init__(self, root: Path) -> None:
        from engines.tiny import builders

        self.root = root
        self.builders = builders()

    def path(self, model_id: str) -> Path:
        b = self.builders[model_id]
        target = self.root / f"{b.module.rsplit('.', 1)[-1]}-v{b.version}" / model_id
        if not (target / ".built").is_file():
            b.build(target)
            if not target.is_dir():
                raise AssertionError(f"the builder of {model_id} wrote nothing at {target}")
            (target / ".built").write_text("ok\n")
        return target

    def models_dir(self, where: Path, *model_ids: str) -> Path:
        for model_id in model_ids:
            link = where / model_id
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(self.path(model_id), target_is_directory=True)
        return where


@pytest.fixture(scope="session")
def tiny_zoo(request: pytest.FixtureRequest) -> TinyZoo:
    return TinyZoo(Path(request.config.cache.mkdir("berth-tiny-zoo")))
