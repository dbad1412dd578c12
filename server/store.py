"""The SQLite store: numbered migrations and all of berth's SQL.

One aiosqlite connection in WAL mode. Times are unix seconds (REAL); money, when it
arrives, is integer sub-units.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)

# Append only: a released migration is never edited, a new one is added.
MIGRATIONS: Sequence[str] = (
    # 1: deployments and their state-change events
    """
    CREATE TABLE deployments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        model TEXT NOT NULL,
        hardware TEXT NOT NULL,
        owner TEXT NOT NULL,
        task TEXT,
        source TEXT NOT NULL DEFAULT 'api',
        desired TEXT NOT NULL DEFAULT 'running' CHECK (desired IN ('running', 'stopped')),
        status TEXT NOT NULL,
        reason TEXT,
        pid INTEGER,
        restarts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        ready_at REAL,
        deleted_at REAL
    );
    CREATE UNIQUE INDEX deployments_live_name ON deployments(name) WHERE deleted_at IS NULL;
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        deployment_id INTEGER NOT NULL REFERENCES deployments(id),
        at REAL NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        pid INTEGER
    );
    CREATE INDEX events_by_deployment ON events(deployment_id, id);
    """,
)


@dataclass(frozen=True)
class DeploymentRow:
    id: int
    name: str
    model: str
    hardware: str
    owner: str
    task: str | None
    source: str
    desired: str
    status: str
    reason: str | None
    pid: int | None
    restarts: int
    created_at: float
    updated_at: float
    ready_at: float | None
    deleted_at: float | None


@dataclass(frozen=True)
class EventRow:
    id: int
    deployment_id: int
    at: float
    status: str
    reason: str | None
    pid: int | None


class Store:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        db = await aiosqlite.connect(path)
        if new:
            os.chmod(path, 0o600)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute("PRAGMA busy_timeout=5000")
        store = cls(db, path)
        await store.migrate()
        return store

    async def close(self) -> None:
        await self._db.close()

    async def migrate(self) -> int:
        """Apply pending migrations; return the schema version."""
        await self._db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
        async with self._db.execute("SELECT MAX(version) FROM schema_migrations") as cur:
            row = await cur.fetchone()
        current = (row[0] if row else None) or 0
        for version, sql in enumerate(MIGRATIONS[current:], start=current + 1):
            log.info("applying migration %d to %s", version, self.path)
            await self._db.executescript(
                f"BEGIN;\n{sql}\nINSERT INTO schema_migrations VALUES ({version}, {time.time()});"
                "\nCOMMIT;")
        return len(MIGRATIONS)

    async def schema_version(self) -> int:
        async with self._db.execute("SELECT MAX(version) FROM schema_migrations") as cur:
            row = await cur.fetchone()
        return int(row[0] or 0) if row else 0

    async def tables(self) -> list[str]:
        async with self._db.execute(
                "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name") as cur:
            return [r[0] for r in await cur.fetchall()]

    async def journal_mode(self) -> str:
        async with self._db.execute("PRAGMA journal_mode") as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else ""

    # --- deployments --------------------------------------------------------------

    async def upsert_config_deployment(self, *, name: str, model: str, hardware: str,
                                       owner: str, task: str | None,
                                       status: str) -> DeploymentRow:
        """Record a deployment from config.toml; the config wins over what is stored."""
        now = time.time()
        existing = await self.get_deployment(name)
        if existing is None:
            await self._db.execute(
                "INSERT INTO deployments (name, model, hardware, owner, task, source, status,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'config', ?, ?, ?)",
                (name, model, hardware, owner, task, status, now, now))
        else:
            await self._db.execute(
                "UPDATE deployments SET model=?, hardware=?, owner=?, task=?, updated_at=?"
                " WHERE id=?", (model, hardware, owner, task, now, existing.id))
        await self._db.commit()
        row = await self.get_deployment(name)
        assert row is not None
        return row

    async def get_deployment(self, name: str) -> DeploymentRow | None:
        async with self._db.execute(
                "SELECT * FROM deployments WHERE name=? AND deleted_at IS NULL", (name,)) as cur:
            row = await cur.fetchone()
        return _deployment(row) if row else None

    async def list_deployments(self) -> list[DeploymentRow]:
        async with self._db.execute(
                "SELECT * FROM deployments WHERE deleted_at IS NULL ORDER BY name") as cur:
            return [_deployment(r) for r in await cur.fetchall()]

    async def record_transition(self, deployment_id: int, *, status: str, reason: str | None,
                                pid: int | None, restarts: int,
                                ready_at: float | None, at: float) -> None:
        """A state change: the deployment row and its event row, in one transaction."""
        await self._db.execute(
            "UPDATE deployments SET status=?, reason=?, pid=?, restarts=?, ready_at=?,"
            " updated_at=? WHERE id=?",
            (status, reason, pid, restarts, ready_at, at, deployment_id))
        await self._db.execute(
            "INSERT INTO events (deployment_id, at, status, reason, pid) VALUES (?, ?, ?, ?, ?)",
            (deployment_id, at, status, reason, pid))
        await self._db.commit()

    async def events(self, deployment_id: int, limit: int = 100) -> list[EventRow]:
        async with self._db.execute(
                "SELECT * FROM events WHERE deployment_id=? ORDER BY id DESC LIMIT ?",
                (deployment_id, limit)) as cur:
            rows = await cur.fetchall()
        return [EventRow(**dict(r)) for r in reversed(rows)]


def _deployment(row: Any) -> DeploymentRow:
    return DeploymentRow(**dict(row))
