"""Which server the console talks to, and with which token: the `berth` CLI's rules.

URL: `--url`, else $BERTH_URL, else http://127.0.0.1:8080.
Token: `--token`, else $BERTH_TOKEN, else $BERTH_ADMIN_TOKEN (the server's own), else
`<state_dir>/admin.token` of the config.toml in the current folder (a local server).
The TUI imports nothing of `server/`, so the few lines of config reading are here.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8080"


def resolve_url(url: str | None) -> str:
    return (url or os.environ.get("BERTH_URL") or DEFAULT_URL).rstrip("/")


def resolve_token(token: str | None, config: Path = Path("config.toml")) -> str | None:
    return (token or os.environ.get("BERTH_TOKEN") or os.environ.get("BERTH_ADMIN_TOKEN")
            or local_admin_token(config))


def local_admin_token(config: Path) -> str | None:
    """The admin token of the server whose config.toml is `config`, when it is local."""
    try:
        raw = tomllib.loads(config.read_text())
        server = raw.get("server", {})
        state_dir = Path(server.get("state_dir", "state")) if isinstance(server, dict) else None
        if state_dir is None:
            return None
        path = (config.parent / state_dir) / "admin.token"
        return path.read_text().strip() or None
    except (OSError, ValueError, TypeError):
        return None
