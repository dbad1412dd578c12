"""Who is calling: the admin token, users' API keys, and the one middleware that checks
every request.

- The admin token comes from BERTH_ADMIN_TOKEN, else from `<state_dir>/admin.token`
  (made 0600 at first start). It may call every route, inference included.
- A user's key (`bk_<id>_<secret>`) is shown once; only its SHA-256 is stored. Keys are
  random (192 bits), so a fast hash is enough; comparisons are constant-time.
- No or bad credentials: 401. A user key on an admin route: 403. A user key on another
  user's endpoint: 404, as if it did not exist (the router checks `may_call`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from server import keys
from server.errors import ApiError, Handler
from server.store import KeyRow

log = logging.getLogger(__name__)

TOKEN_ENV = "BERTH_ADMIN_TOKEN"
TOKEN_FILE = "admin.token"
KEY_PREFIX = "bk_"
OPEN_PATHS = frozenset({"/healthz"})
# Capability URLs: the unguessable name is the credential (see server/files.py).
OPEN_PREFIXES = ("/files/",)
ADMIN_PREFIXES = ("/api/", "/openapi.json", "/metrics")


class Unauthorized(ApiError):
    status = 401
    type = "authentication_error"


class Forbidden(ApiError):
    status = 403
    type = "permission_error"


@dataclass(frozen=True)
class Principal:
    user: str | None  # None: the admin
    key_id: str | None = None

    @property
    def admin(self) -> bool:
        return self.user is None

    def may_call(self, owner: str) -> bool:
        return self.admin or (self.user == owner and owner not in RESERVED_USERS)


ADMIN = Principal(user=None)
# The admin owns what config.toml and owner-less creates make: no user may take its name.
ADMIN_OWNER = "admin"
RESERVED_USERS = frozenset({ADMIN_OWNER, "root", "berth", "system"})


def admin_token(state_dir: Path) -> tuple[str, str]:
    """(token, where it came from); generated into the state dir on first start."""
    env = os.environ.get(TOKEN_ENV)
    if env:
        return env, f"${TOKEN_ENV}"
    path = state_dir / TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip(), str(path)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, str(path)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """(key id, the full key) for a new API key."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(24)}"


class Keyring:
    """Every live key's hash, in memory: a lookup per request costs no database trip, and
    a revocation (which updates it) takes effect on the very next request."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._keys: dict[str, tuple[str, str]] = {}  # id -> (hash, user)

    def load(self, rows: list[KeyRow]) -> None:
        self._keys = {r.id: (r.hash, r.user) for r in rows if r.revoked_at is None}

    def add(self, key_id: str, key_hash: str, user: str) -> None:
        self._keys[key_id] = (key_hash, user)

    def revoke(self, key_id: str) -> None:
        self._keys.pop(key_id, None)

    def who(self, presented: str) -> Principal | None:
        try:
            raw = presented.encode()
        except UnicodeEncodeError:  # undecodable header bytes: no key of ours
            return None
        if hmac.compare_digest(raw, self._token):
            return ADMIN
        if not presented.startswith(KEY_PREFIX):
            return None
        key_id = presented[len(KEY_PREFIX):].split("_", 1)[0]
        known = self._keys.get(key_id)
        # compare even for an unknown id, so timing says nothing about which ids exist
        stored, user = known or ("0" * 64, "")
        if hmac.compare_digest(hash_key(presented), stored) and known:
            return Principal(user=user, key_id=key_id)
        return None


PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)


def principal(request: web.Request) -> Principal:
    return request.get(PRINCIPAL, ADMIN)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if not header.strip():
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`",
                           code="missing_api_key")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized("unsupported credentials: send `Authorization: Bearer <key>`",
                           code="invalid_api_key")
    who = request.app[keys.KEYRING].who(presented.strip())
    if who is None:
        raise Unauthorized("invalid or revoked API key", code="invalid_api_key")
    if not who.admin and request.path.startswith(ADMIN_PREFIXES):
        raise Forbidden("this route needs the admin token", code="admin_only")
    request[PRINCIPAL] = who
    return await handler(request)
