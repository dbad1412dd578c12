"""What every task engine shares: the error it raises, its interface, its worker thread.

A task module (`engines.text`, `engines.embeddings`) exposes
`load(spec, worker) -> TaskEngine`; the app calls it on the worker thread.

Nothing here imports torch at module level: the app imports this before the model
(and torch with it) is loaded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel

from engines.protocol import EngineSpec, resolve_dtype

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

T = TypeVar("T")

# Above this a tokenizer's model_max_length is a "no limit" sentinel, not a length.
_SANE_LENGTH = 10_000_000


class RequestError(Exception):
    """One request failed; answered with the JSON error shape. The engine lives on.

    `code` is required: every error names what went wrong in a word a client can test
    (never `"code": null`)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type
        self.headers = headers


class TaskEngine(Protocol):
    """A loaded model that answers the routes of its task."""

    context_length: int | None

    async def handle(self, route: str, body: BaseModel, request: web.Request) -> web.StreamResponse:
        """Answers one validated request body; raises RequestError for bad input."""
        ...

    def close(self) -> None:
        """Stops whatever the engine runs in the background (called once, at shutdown)."""
        ...


class Worker:
    """One daemon thread that runs every torch call, in order, one at a time.

    One at a time keeps seeded sampling deterministic and the memory bounded; a
    daemon thread never holds up the process exit (a model load cannot be cancelled).
    """

    def __init__(self, name: str = "engine-worker") -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queues `fn(*args)`; the returned future resolves on the calling event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if future.done():
                return
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

        def job() -> None:
            value: Any
            try:
                value = fn(*args)
                ok = True
            except BaseException as exc:  # handed to the awaiting coroutine
                ok, value = False, exc
            try:
                loop.call_soon_threadsafe(settle, ok, value)
            except RuntimeError:  # the loop closed while we worked
                log.debug("result dropped: event loop closed")

        self._jobs.put(job)
        return future

    def close(self, timeout: float = 2.0) -> None:
        """Lets the current job finish (up to `timeout`), then stops the thread."""
        self._jobs.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()


def check_model_dir(spec: EngineSpec) -> None:
    """A clear error for a model folder that is not there (transformers would take the
    path for a hub repo id and complain about its characters)."""
    path = spec.model_path
    if (os.path.isabs(path) or path.startswith(".")) and not os.path.isdir(path):
        raise FileNotFoundError(f"no model folder at {path}")


def setup_torch(spec: EngineSpec) -> tuple[Any, str]:
    """Imports torch, sets its thread count; returns (torch dtype, device) for this spec.

    The device is the first visible GPU where there is one (the slice decides which
    GPU is visible), else the CPU.
    """
    import torch

    torch.set_num_threads(max(1, spec.threads))
    has_gpu = torch.cuda.is_available()
    name = resolve_dtype(spec.dtype, has_gpu=has_gpu)
    return getattr(torch, name), ("cuda" if has_gpu else "cpu")


def load_pretrained(spec: EngineSpec, model_class: Any,
                    dtype: Any = None) -> tuple[Any, Any, Any, str]:
    """(tokenizer, model in eval mode, dtype, device) from spec.model_path, local files
    only; `dtype` overrides the spec's (embeddings stay in float32). Blocking."""
    from transformers import AutoTokenizer

    check_model_dir(spec)
    spec_dtype, device = setup_torch(spec)
    dtype = dtype or spec_dtype
    quiet_transformers()
    opts: dict[str, Any] = {"local_files_only": True, "trust_remote_code": spec.trust_remote_code}
    tokenizer = AutoTokenizer.from_pretrained(spec.model_path, **opts)
    model = model_class.from_pretrained(spec.model_path, dtype=dtype, device_map=device, **opts)
    model.eval()
    return tokenizer, model, dtype, device


def quiet_transformers() -> None:
    """No progress bars in an engine's log file."""
    import transformers

    transformers.utils.logging.disable_progress_bar()


def sane_length(*candidates: object) -> int | None:
    """The smallest of the candidates that is a real length (ints in 1..10M), if any."""
    lengths = [
        c
        for c in candidates
        if isinstance(c, int) and not isinstance(c, bool) and 0 < c < _SANE_LENGTH
    ]
    return min(lengths) if lengths else None
