"""Every app-scoped object, declared in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from server.accounting import Accounting
    from server.auth import Keyring
    from server.config import Config
    from server.meter import Meter
    from server.store import Store
    from server.supervisor import Supervisor

CONFIG: web.AppKey[Config] = web.AppKey("config")
STORE: web.AppKey[Store] = web.AppKey("store")
SUPERVISOR: web.AppKey[Supervisor] = web.AppKey("supervisor")
KEYRING: web.AppKey[Keyring] = web.AppKey("keyring")
METER: web.AppKey[Meter] = web.AppKey("meter")
ACCOUNTING: web.AppKey[Accounting] = web.AppKey("accounting")
