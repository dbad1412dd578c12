"""create_app(config): the one place that builds berth's aiohttp application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from server import files, keys, routes
from server.accounting import Accounting
from server.auth import Keyring, admin_token, auth_middleware
from server.capacity import Node, detect_gpus
from server.config import Config, ConfigError
from server.errors import error_middleware
from server.meter import Meter
from server.slices import SliceError, choose_driver, node_cores, node_memory_bytes
from server.statelock import StateLock
from server.store import Store
from server.supervisor import Supervisor

log = logging.getLogger(__name__)


def create_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware],
                          client_max_size=config.server.max_body_bytes)
    app[keys.CONFIG] = config
    app[keys.ACCOUNTING] = Accounting()
    app.cleanup_ctx.append(_store)
    app.cleanup_ctx.append(_supervisor)
    app.cleanup_ctx.append(files.expire_files)
    routes.register(app)
    return app


async def _store(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    state_dir = config.server.state_dir
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state_dir.chmod(0o700)  # tokens, keys' hashes and the database live here
    lock = StateLock.for_state_dir(state_dir)
    lock.acquire()  # StateDirBusy: another server owns this state dir
    try:
        store = await Store.open(state_dir / "berth.db")
        app[keys.STORE] = store
        token, source = admin_token(state_dir)
        keyring = Keyring(token)
        keyring.load(await store.list_keys())
        app[keys.KEYRING] = keyring
        log.info("admin token: %s (the berth CLI reads it from there when local)", source)
        try:
            yield
        finally:
            await store.close()
    finally:
        lock.release()


async def _supervisor(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    lock = StateLock.for_slice_parent(config.node.slice_parent)
    lock.acquire()  # StateDirBusy: another server's engines live under this parent
    try:
        driver, reason = choose_driver(config.node.slice_driver,
                                       parent=config.node.slice_parent)
    except SliceError as e:  # an explicit v1/v2 that cannot work here
        lock.release()
        raise ConfigError(f"node.slice_driver = {config.node.slice_driver!r}: {e}") from None
    (log.info if driver.enforced else log.warning)("slices: %s", reason)
    node = Node.from_config(config.node, cores=node_cores(), memory_bytes=node_memory_bytes(),
                            gpus=detect_gpus())
    log.info("node: %g CPU on cores %s, %.1f GiB, %d GPU (overcommit %g)", node.cpus,
             list(node.cores), node.memory_bytes / 1024**3, node.gpus, node.overcommit)
    supervisor = Supervisor(config, app[keys.STORE], slices=driver, slices_reason=reason,
                            node=node)
    app[keys.SUPERVISOR] = supervisor
    try:
        try:
            await supervisor.start()
        except BaseException:
            await supervisor.close()  # engines already spawned must not outlive a failed start
            raise
        meter = Meter(config, app[keys.STORE], supervisor, app[keys.ACCOUNTING])
        app[keys.METER] = meter
        meter.start()
        yield
        await supervisor.close()
        await meter.close()  # after the engines: their last seconds are billed too
    finally:
        lock.release()
