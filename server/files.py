"""GET /files/images/{name}: the PNGs an images engine wrote for `url` answers.

Engines write them into `<state_dir>/files/images/` (EngineSpec.files_dir is
`<state_dir>/files`) under a name that is 128 random bits in hex plus `.png`, written
whole and renamed into place. The server serves a file for `server.files_ttl_s` seconds
after it was written, then answers 404; a cleanup task deletes expired files.

No token is needed: the URL is a capability, like OpenAI's signed image URLs. Its name
cannot be guessed or listed, it works for a limited time, and it can be handed to a
browser or an <img> tag that has no API key. Anyone who has the URL can fetch the image
until it expires. Only names of exactly that shape are looked up (nothing else reaches
the file system, so no path traversal), and every miss is the same 404 JSON error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from server import keys
from server.errors import NotFound

log = logging.getLogger(__name__)

PREFIX = "/files/"
IMAGES = "images"
NAME = re.compile(r"[0-9a-f]{32}\.png")
SWEEP_MAX_INTERVAL_S = 60.0


def images_dir(app: web.Application) -> Path:
    return app[keys.CONFIG].server.state_dir / "files" / IMAGES


async def image(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    ttl = request.app[keys.CONFIG].server.files_ttl_s
    if not NAME.fullmatch(name):
        raise _missing()
    path = images_dir(request.app) / name
    try:
        written, data = await asyncio.to_thread(_read, path)
    except FileNotFoundError:
        raise _missing() from None
    left = written + ttl - time.time()
    if left <= 0:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise _missing()
    return web.Response(body=data, content_type="image/png", headers={
        "Cache-Control": f"private, max-age={int(left)}",
        "X-Content-Type-Options": "nosniff",
    })


def _read(path: Path) -> tuple[float, bytes]:
    """(when it was written, its bytes), from one open file (no race with a delete)."""
    with path.open("rb") as f:
        return os.fstat(f.fileno()).st_mtime, f.read()


def _missing() -> NotFound:
    return NotFound("no such file (or it has expired)", code="file_not_found")


def sweep(folder: Path, ttl_s: float, now: float | None = None) -> int:
    """Deletes the files of `folder` written more than `ttl_s` ago (unfinished temporary
    files too); returns how many."""
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return 0
    for path in entries:
        try:
            if path.is_file() and path.stat().st_mtime + ttl_s <= now:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # deleted meanwhile (by the route, or another sweep)
    return removed


async def expire_files(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: sweeps expired files now and then, while the server runs."""
    folder = images_dir(app)
    ttl = app[keys.CONFIG].server.files_ttl_s
    interval = min(float(ttl), SWEEP_MAX_INTERVAL_S)

    async def loop() -> None:
        while True:
            try:
                removed = await asyncio.to_thread(sweep, folder, ttl)
            except OSError as e:
                log.warning("sweeping %s failed: %s", folder, e)
            else:
                if removed:
                    log.info("deleted %d expired files from %s", removed, folder)
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop(), name="berth-expire-files")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
