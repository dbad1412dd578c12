"""create_app(config): the one place that builds berth's aiohttp application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from server import admin, keys, router
from server.config import Config
from server.errors import error_middleware
from server.store import Store
from server.supervisor import Supervisor

log = logging.getLogger(__name__)


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[error_middleware],
                          client_max_size=config.server.max_body_bytes)
    app[keys.CONFIG] = config
    app.cleanup_ctx.append(_store)
    app.cleanup_ctx.append(_supervisor)
    _routes(app)
    return app


def _routes(app: web.Application) -> None:
    """Every route of the server, in one list."""
    app.add_routes([
        web.get("/healthz", admin.healthz),
        # inference (OpenAI-compatible); `model` is the endpoint name
        web.get("/v1/models", router.list_models),
        web.post("/v1/{route:(chat/completions|completions|embeddings)}", router.inference),
        web.get("/endpoints/{name}/v1/models", router.list_models),
        web.post("/endpoints/{name}/v1/{route:(chat/completions|completions|embeddings)}",
                 router.inference),
        # admin
        web.get("/api/deployments", admin.list_deployments),
        web.get("/api/deployments/{name}", admin.get_deployment),
        web.get("/api/deployments/{name}/events", admin.deployment_events),
        web.get("/api/deployments/{name}/logs", admin.deployment_logs),
    ])


async def _store(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    config.server.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = await Store.open(config.server.state_dir / "berth.db")
    app[keys.STORE] = store
    yield
    await store.close()


async def _supervisor(app: web.Application) -> AsyncIterator[None]:
    supervisor = Supervisor(app[keys.CONFIG], app[keys.STORE])
    app[keys.SUPERVISOR] = supervisor
    await supervisor.start()
    yield
    await supervisor.close()
