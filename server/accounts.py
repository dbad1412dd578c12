"""Admin routes for users and their API keys."""

from __future__ import annotations

import re

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from server import keys
from server.admin import iso, json_body
from server.auth import ADMIN_OWNER, RESERVED_USERS, hash_key, new_key
from server.errors import BadRequest, Conflict, NotFound
from server.store import NameTaken

USER_PATTERN = r"[a-z0-9][a-z0-9._-]{0,62}"
_USER_RE = re.compile(USER_PATTERN)


class CreateUser(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(strict=True, description=f"user name (pattern {USER_PATTERN})")


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = Field(None, strict=True, max_length=200,
                             description="a label for the key, e.g. where it is used")


async def create_user(request: web.Request) -> web.Response:
    body: CreateUser = await json_body(request, CreateUser)
    if not _USER_RE.fullmatch(body.name):
        raise BadRequest(f"{body.name!r} is not a valid user name (pattern {USER_PATTERN})",
                         code="invalid_name", param="name")
    if body.name in RESERVED_USERS:
        raise BadRequest(f"{body.name!r} is reserved (the admin's own deployments belong to "
                         f"{ADMIN_OWNER!r})", code="reserved_name", param="name")
    try:
        user = await request.app[keys.STORE].create_user(body.name)
    except NameTaken:
        raise Conflict(f"user {body.name!r} already exists", code="name_taken",
                       param="name") from None
    return web.json_response({"id": user.id, "name": user.name,
                              "created_at": iso(user.created_at)}, status=201)


async def list_users(request: web.Request) -> web.Response:
    users = await request.app[keys.STORE].list_users()
    return web.json_response({"data": [{"id": u.id, "name": u.name,
                                        "created_at": iso(u.created_at)} for u in users]})


async def create_key(request: web.Request) -> web.Response:
    body: CreateKey = (await json_body(request, CreateKey) if request.can_read_body
                       else CreateKey(name=None))
    store = request.app[keys.STORE]
    name = request.match_info["user"]
    user = await store.get_user(name)
    if user is None:
        raise NotFound(f"user {name!r} does not exist (POST /api/users makes one)",
                       code="user_not_found")
    key_id, key = new_key()
    row = await store.create_key(key_id=key_id, user_id=user.id, name=body.name,
                                 key_hash=hash_key(key))
    request.app[keys.KEYRING].add(key_id, row.hash, user.name)
    return web.json_response({"id": key_id, "key": key, "user": user.name, "name": body.name,
                              "created_at": iso(row.created_at),
                              "note": "the key is shown this once; only a hash is kept"},
                             status=201)


async def list_keys(request: web.Request) -> web.Response:
    rows = await request.app[keys.STORE].list_keys()
    return web.json_response({"data": [
        {"id": r.id, "user": r.user, "name": r.name, "created_at": iso(r.created_at),
         "revoked_at": iso(r.revoked_at)} for r in rows]})


async def revoke_key(request: web.Request) -> web.Response:
    key_id = request.match_info["id"]
    if not await request.app[keys.STORE].revoke_key(key_id):
        raise NotFound(f"no live key {key_id!r}", code="key_not_found")
    request.app[keys.KEYRING].revoke(key_id)
    return web.json_response({"id": key_id, "revoked": True})
