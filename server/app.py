"""create_app(config): the one place that builds berth's aiohttp application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from server import keys, routes
from server.config import Config
from server.errors import error_middleware
from server.statelock import StateLock
from server.store import Store
from server.supervisor import Supervisor

log = logging.getLogger(__name__)


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[error_middleware],
                          client_max_size=config.server.max_body_bytes)
    app[keys.CONFIG] = config
    app.cleanup_ctx.append(_store)
    app.cleanup_ctx.append(_supervisor)
    routes.register(app)
    return app


async def _store(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    config.server.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = StateLock(config.server.state_dir)
    lock.acquire()  # StateDirBusy: another server owns this state dir
    try:
        store = await Store.open(config.server.state_dir / "berth.db")
        app[keys.STORE] = store
        try:
            yield
        finally:
            await store.close()
    finally:
        lock.release()


async def _supervisor(app: web.Application) -> AsyncIterator[None]:
    supervisor = Supervisor(app[keys.CONFIG], app[keys.STORE])
    app[keys.SUPERVISOR] = supervisor
    try:
        await supervisor.start()
    except BaseException:
        await supervisor.close()  # engines already spawned must not outlive a failed start
        raise
    yield
    await supervisor.close()
