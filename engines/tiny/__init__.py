"""Tiny random-weight stand-ins for every model family berth serves, built offline.

Each module of this package covers some families and exposes
`BUILDERS: dict[str, Callable[[Path], Path]]`, keyed by the catalog id the tiny model
stands in for (the builder writes a Hugging Face layout folder at the path it is given
and returns it), and `VERSION: int`, bumped whenever its builders change what they write.
`builders()` gathers them all, so a new module needs no registration anywhere.

Tests place these under the real catalog ids in a temporary models_dir, so the real
catalog, memory estimate, engine and router paths run on them. Their outputs are
garbage: test shapes, types, lengths and determinism, never the words.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Builder = Callable[[Path], Path]


@dataclass(frozen=True)
class TinyBuilder:
    model_id: str
    module: str
    version: int
    build: Builder


def builders() -> dict[str, TinyBuilder]:
    """Every tiny builder of the package, by the catalog id it stands in for."""
    found: dict[str, TinyBuilder] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        version = int(getattr(module, "VERSION", 1))
        for model_id, build in getattr(module, "BUILDERS", {}).items():
            if model_id in found:
                raise ValueError(f"{model_id} has two tiny builders: "
                                 f"{found[model_id].module} and {module.__name__}")
            found[model_id] = TinyBuilder(model_id, module.__name__, version, build)
    return found
