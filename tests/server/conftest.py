from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from server.app import create_app
from server.auth import TOKEN_ENV
from server.config import load_config
from server.supervisor import Supervisor
from tests.helpers import ADMIN_TOKEN, AUTH, write_config


@pytest.fixture
def make_client(aiohttp_client, tmp_path, monkeypatch):
    """An in-process berth app (real store, real supervisor) from a test config; the
    client sends the admin token unless `headers` says otherwise."""
    monkeypatch.setenv(TOKEN_ENV, ADMIN_TOKEN)

    async def make(deployments=None, models_dir=None, headers=AUTH, **kw):
        path = write_config(tmp_path / "config.toml", state_dir=tmp_path / "state",
                            models_dir=models_dir or tmp_path / "models",
                            deployments=deployments, **kw)
        return await aiohttp_client(create_app(load_config(path)), headers=headers)

    return make


async def wait_for(predicate: Callable[[], bool], seconds: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def supervisor_of(client) -> Supervisor:
    from server import keys
    return client.app[keys.SUPERVISOR]
