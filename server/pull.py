"""`berth pull MODEL`: download a model's weights from the Hugging Face Hub.

Runs on this machine, not through the API: the files land in `models_dir/<org>/<name>`
(Hugging Face layout), where deployments look for them. huggingface_hub is imported
only here, so the rest of the CLI starts fast. Where the hub cannot be reached the pull
fails at once with one line that says so (`PullError`), never with a traceback.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_S = 10.0


class PullError(Exception):
    """A pull that cannot be done; the message is one line, fit to print."""


@dataclass(frozen=True)
class Pulled:
    model: str  # the canonical id: the folder under models_dir
    source: str  # the hub repo it came from
    path: Path
    files: int
    size_bytes: int
    revision: str | None


def resolve(model: str) -> tuple[str, str]:
    """(the id to store it under, the hub repo to download from) for a model id or alias.

    The catalog (server.catalog, where present) knows aliases (`bark/suno` -> `suno/bark`)
    and models whose hub repo differs from their id; a model it does not know is taken
    as given.
    """
    try:
        catalog = importlib.import_module("server.catalog")
    except ImportError:
        return model, model
    lookup = getattr(catalog, "resolve", None)
    try:
        found = lookup(model) if lookup is not None else None
    except (LookupError, ValueError):
        found = None
    if isinstance(found, str):
        return found, found
    model_id = getattr(found, "id", None)
    if not isinstance(model_id, str):
        return model, model
    source = getattr(found, "source_id", None) or getattr(found, "hf_id", None) or model_id
    return model_id, str(source)


def destination(models_dir: Path, model_id: str) -> Path:
    """models_dir/ORG/NAME; PullError for an id that would land anywhere else."""
    parts = Path(model_id).parts
    if (not model_id or Path(model_id).is_absolute() or ".." in parts or len(parts) > 2
            or model_id.strip() != model_id):
        raise PullError(f"{model_id!r} is not a Hugging Face model id (expected ORG/NAME)")
    return models_dir / model_id


def pull(model: str, models_dir: Path, *, revision: str | None = None,
         timeout: float = DEFAULT_TIMEOUT_S, progress: bool = True) -> Pulled:
    """Download `model` into `models_dir/<org>/<name>`; PullError when it cannot."""
    model_id, repo_id = resolve(model)
    dest = destination(models_dir, model_id)
    destination(models_dir, repo_id)  # the hub id must be a plain ORG/NAME too
    # Read by huggingface_hub at import: a short wait for the metadata calls it makes.
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(max(1, round(timeout))))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(max(1, round(timeout))))
    if not progress:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    try:
        import huggingface_hub
        from huggingface_hub import constants as hf_constants
        from huggingface_hub import errors as hf_errors
    except ImportError:
        raise PullError("berth pull needs the huggingface_hub package "
                        "(pip install huggingface_hub)") from None

    endpoint = hf_constants.ENDPOINT
    api = huggingface_hub.HfApi()
    # Ask the hub first, with a short timeout: an unreachable hub, an unknown or gated
    # repo is one clear line here, before anything is written.
    try:
        info = api.model_info(repo_id, revision=revision, timeout=timeout)
    except Exception as e:
        raise PullError(_hub_error(repo_id, revision, endpoint, e, hf_errors)) from None
    sha = getattr(info, "sha", None) or revision

    dest.mkdir(parents=True, exist_ok=True)
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=sha, local_dir=dest, etag_timeout=timeout)
    except Exception as e:
        raise PullError(f"cannot pull {repo_id}: download stopped ({_why(e)}); "
                        "run `berth pull` again to resume") from None
    path = Path(folder)
    files = [f for f in path.rglob("*") if f.is_file() and ".cache" not in f.parts]
    size = sum(f.stat().st_size for f in files)
    return Pulled(model_id, repo_id, path, len(files), size, sha)


def _hub_error(repo_id: str, revision: str | None, endpoint: str, e: Exception,
               hf_errors: Any) -> str:
    if isinstance(e, hf_errors.GatedRepoError):
        return (f"cannot pull {repo_id}: the model is gated: accept its licence at "
                f"{endpoint}/{repo_id} and set HF_TOKEN to a token of that account")
    if isinstance(e, hf_errors.RepositoryNotFoundError):
        return (f"cannot pull {repo_id}: no such model on the Hugging Face Hub "
                f"(or it is private: set HF_TOKEN)")
    if isinstance(e, hf_errors.RevisionNotFoundError):
        return f"cannot pull {repo_id}: the Hugging Face Hub has no revision {revision!r}"
    if isinstance(e, hf_errors.OfflineModeIsEnabled):
        return (f"cannot pull {repo_id}: the Hugging Face Hub cannot be reached: "
                "HF_HUB_OFFLINE is set")
    if isinstance(e, hf_errors.HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", "?")
        return f"cannot pull {repo_id}: the Hugging Face Hub at {endpoint} answered {status}"
    return (f"cannot pull {repo_id}: the Hugging Face Hub cannot be reached at {endpoint} "
            f"({_why(e)})")


def _why(e: BaseException) -> str:
    """A short, one-line reason: the innermost cause's type and message."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text}"[:200]
