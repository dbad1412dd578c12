"""The SQLite store: numbered migrations and all of berth's SQL.

One aiosqlite connection in WAL mode. Times are unix seconds (REAL); money, when it
arrives, is integer sub-units.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
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
    # 2: users and their API keys (only a hash of each key is kept)
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        name TEXT,
        hash TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    """,
    # 3: billed intervals: one row per engine process lifetime, its end extended every
    # second; the rate (micro-units per hour) is frozen into the row
    """
    CREATE TABLE billing (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        deployment_id INTEGER NOT NULL REFERENCES deployments(id),
        deployment TEXT NOT NULL,
        owner TEXT NOT NULL,
        hardware TEXT NOT NULL,
        pid INTEGER,
        rate_micros_per_hour INTEGER NOT NULL CHECK (rate_micros_per_hour >= 0),
        currency TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        CHECK (end_ms >= start_ms)
    );
    CREATE INDEX billing_by_deployment ON billing(deployment_id, start_ms);
    CREATE INDEX billing_by_time ON billing(start_ms);
    """,
    # 4: one row per inference request
    """
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        deployment_id INTEGER,
        deployment TEXT,
        owner TEXT,
        route TEXT NOT NULL,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        latency_ms REAL,
        ttfb_ms REAL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER
    );
    CREATE INDEX requests_by_deployment ON requests(deployment_id, started_ms);
    """,
    # 5: usage history: per-second samples and their per-minute and per-hour rollups,
    # all updated as each sample is taken (sums and counts: averages are read out)
    """
    CREATE TABLE usage (
        deployment_id INTEGER NOT NULL,
        step INTEGER NOT NULL CHECK (step IN (1, 60, 3600)),
        ts INTEGER NOT NULL,  -- unix seconds at the start of the bucket, a multiple of step
        samples INTEGER NOT NULL,  -- readings of the engine's slice in the bucket
        cpu_percent_sum REAL NOT NULL,
        memory_bytes_sum INTEGER NOT NULL,
        memory_bytes_max INTEGER NOT NULL,
        requests INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        latency_ms_sum REAL NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        PRIMARY KEY (deployment_id, step, ts)
    ) WITHOUT ROWID;
    CREATE INDEX usage_by_time ON usage(step, ts);
    CREATE INDEX requests_by_time ON requests(started_ms);
    """,
    # 6: GPU memory of engines on GPU tiers (samples with a GPU reading, their sum, max)
    """
    ALTER TABLE usage ADD COLUMN gpu_samples INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN gpu_memory_bytes_sum INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN gpu_memory_bytes_max INTEGER NOT NULL DEFAULT 0;
    """,
    # 7: OOM kills survive a server restart, as restarts do
    """
    ALTER TABLE deployments ADD COLUMN oom_kills INTEGER NOT NULL DEFAULT 0;
    """,
)

USAGE_STEPS = (1, 60, 3600)
# One bucket's numbers, in the order of the usage table's columns after `ts`.
UsageSums = tuple[int, float, int, int, int, int, float, int, int, int, int, int]


_ADD_USAGE = """
    INSERT INTO usage (deployment_id, step, ts, samples, cpu_percent_sum, memory_bytes_sum,
                       memory_bytes_max, requests, errors, latency_ms_sum, prompt_tokens,
                       completion_tokens, gpu_samples, gpu_memory_bytes_sum,
                       gpu_memory_bytes_max)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (deployment_id, step, ts) DO UPDATE SET
        samples = samples + excluded.samples,
        cpu_percent_sum = cpu_percent_sum + excluded.cpu_percent_sum,
        memory_bytes_sum = memory_bytes_sum + excluded.memory_bytes_sum,
        memory_bytes_max = MAX(memory_bytes_max, excluded.memory_bytes_max),
        requests = requests + excluded.requests,
        errors = errors + excluded.errors,
        latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        gpu_samples = gpu_samples + excluded.gpu_samples,
        gpu_memory_bytes_sum = gpu_memory_bytes_sum + excluded.gpu_memory_bytes_sum,
        gpu_memory_bytes_max = MAX(gpu_memory_bytes_max, excluded.gpu_memory_bytes_max)
"""


class NameTaken(Exception):
    """A live deployment already has this name."""


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
    oom_kills: int = 0


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
        # One connection is shared by every coroutine: each write transaction holds this
        # lock, so one coroutine's rollback can never undo another's statements.
        self._write_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            try:
                yield self._db
            except BaseException:
                await self._db.rollback()
                raise
            await self._db.commit()

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
        """Record a deployment from config.toml; the config wins over what is stored,
        except `desired`: a deployment a person stopped stays stopped."""
        now = time.time()
        async with self._transaction() as db:
            cur = await db.execute(
                "UPDATE deployments SET model=?, hardware=?, owner=?, task=?, updated_at=?"
                " WHERE name=? AND deleted_at IS NULL", (model, hardware, owner, task, now, name))
            if cur.rowcount == 0:
                await db.execute(
                    "INSERT INTO deployments (name, model, hardware, owner, task, source,"
                    " status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'config', ?, ?, ?)",
                    (name, model, hardware, owner, task, status, now, now))
        row = await self.get_deployment(name)
        assert row is not None
        return row

    async def create_deployment(self, *, name: str, model: str, hardware: str, owner: str,
                                task: str | None, status: str) -> DeploymentRow:
        """A new deployment from the API; NameTaken if a live one has the name."""
        now = time.time()
        try:
            async with self._transaction() as db:
                await db.execute(
                    "INSERT INTO deployments (name, model, hardware, owner, task, source,"
                    " status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'api', ?, ?, ?)",
                    (name, model, hardware, owner, task, status, now, now))
        except sqlite3.IntegrityError:
            raise NameTaken(name) from None
        row = await self.get_deployment(name)
        assert row is not None
        return row

    async def set_desired(self, deployment_id: int, desired: str) -> None:
        """What a person asked for (`running` or `stopped`); restored after a restart."""
        async with self._transaction() as db:
            await db.execute("UPDATE deployments SET desired=?, updated_at=? WHERE id=?",
                             (desired, time.time(), deployment_id))

    async def mark_deleted(self, deployment_id: int) -> None:
        """Deleted deployments keep their rows and events (history, billing)."""
        now = time.time()
        async with self._transaction() as db:
            await db.execute(
                "UPDATE deployments SET deleted_at=?, updated_at=?, desired='stopped', pid=NULL"
                " WHERE id=?", (now, now, deployment_id))

    async def get_deployment(self, name: str) -> DeploymentRow | None:
        async with self._db.execute(
                "SELECT * FROM deployments WHERE name=? AND deleted_at IS NULL", (name,)) as cur:
            row = await cur.fetchone()
        return _deployment(row) if row else None

    async def get_deployment_any(self, name: str) -> DeploymentRow | None:
        """The newest deployment ever named `name`, deleted or not."""
        async with self._db.execute(
                "SELECT * FROM deployments WHERE name=? ORDER BY id DESC LIMIT 1",
                (name,)) as cur:
            row = await cur.fetchone()
        return _deployment(row) if row else None

    async def list_deployments(self) -> list[DeploymentRow]:
        async with self._db.execute(
                "SELECT * FROM deployments WHERE deleted_at IS NULL ORDER BY name") as cur:
            return [_deployment(r) for r in await cur.fetchall()]

    async def record_transition(self, deployment_id: int, *, status: str, reason: str | None,
                                pid: int | None, restarts: int,
                                ready_at: float | None, at: float,
                                event_pid: int | None = None, oom_kills: int = 0) -> None:
        """A state change: the deployment row and its event row, in one transaction.
        `event_pid` is the process the event is about (a crashed engine's, say)."""
        async with self._transaction() as db:
            await db.execute(
                "UPDATE deployments SET status=?, reason=?, pid=?, restarts=?, ready_at=?,"
                " updated_at=?, oom_kills=? WHERE id=?",
                (status, reason, pid, restarts, ready_at, at, oom_kills, deployment_id))
            await db.execute(
                "INSERT INTO events (deployment_id, at, status, reason, pid)"
                " VALUES (?, ?, ?, ?, ?)",
                (deployment_id, at, status, reason, event_pid if event_pid else pid))

    # --- users and API keys ---------------------------------------------------------

    async def create_user(self, name: str) -> UserRow:
        """NameTaken if a user has the name."""
        try:
            async with self._transaction() as db:
                await db.execute("INSERT INTO users (name, created_at) VALUES (?, ?)",
                                 (name, time.time()))
        except sqlite3.IntegrityError:
            raise NameTaken(name) from None
        user = await self.get_user(name)
        assert user is not None
        return user

    async def get_user(self, name: str) -> UserRow | None:
        async with self._db.execute("SELECT * FROM users WHERE name=?", (name,)) as cur:
            row = await cur.fetchone()
        return UserRow(**dict(row)) if row else None

    async def list_users(self) -> list[UserRow]:
        async with self._db.execute("SELECT * FROM users ORDER BY name") as cur:
            return [UserRow(**dict(r)) for r in await cur.fetchall()]

    async def create_key(self, *, key_id: str, user_id: int, name: str | None,
                         key_hash: str) -> KeyRow:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO api_keys (id, user_id, name, hash, created_at)"
                " VALUES (?, ?, ?, ?, ?)", (key_id, user_id, name, key_hash, time.time()))
        keys = [k for k in await self.list_keys() if k.id == key_id]
        return keys[0]

    async def revoke_key(self, key_id: str) -> bool:
        """True if a live key was revoked now."""
        async with self._transaction() as db:
            cur = await db.execute(
                "UPDATE api_keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                (time.time(), key_id))
            return cur.rowcount == 1

    async def list_keys(self) -> list[KeyRow]:
        async with self._db.execute(
                "SELECT k.id, u.name AS user, k.name, k.hash, k.created_at, k.revoked_at"
                " FROM api_keys k JOIN users u ON u.id = k.user_id ORDER BY k.created_at"
                ) as cur:
            return [KeyRow(**dict(r)) for r in await cur.fetchall()]

    # --- billing ----------------------------------------------------------------------

    async def open_interval(self, *, deployment_id: int, deployment: str, owner: str,
                            hardware: str, pid: int | None, rate_micros_per_hour: int,
                            currency: str, start_ms: int) -> int:
        """A new billed interval, never starting before this deployment's last one ended."""
        async with self._transaction() as db:
            async with db.execute("SELECT MAX(end_ms) FROM billing WHERE deployment_id=?",
                                  (deployment_id,)) as cur:
                row = await cur.fetchone()
            start_ms = max(start_ms, int(row[0] or 0) if row else 0)
            cur2 = await db.execute(
                "INSERT INTO billing (deployment_id, deployment, owner, hardware, pid,"
                " rate_micros_per_hour, currency, start_ms, end_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (deployment_id, deployment, owner, hardware, pid, rate_micros_per_hour,
                 currency, start_ms, start_ms))
            return int(cur2.lastrowid or 0)

    async def billing_rows(self, *, deployment_id: int | None = None, since_ms: int = 0,
                           until_ms: int = 2**62) -> list[dict[str, Any]]:
        """Intervals overlapping [since, until), clipped to it."""
        sql = ("SELECT deployment_id, deployment, owner, hardware, rate_micros_per_hour,"
               " currency, MAX(start_ms, ?) AS start_ms, MIN(end_ms, ?) AS end_ms,"
               " (SELECT d.deleted_at IS NOT NULL FROM deployments d"
               "  WHERE d.id = deployment_id) AS deleted"
               " FROM billing WHERE end_ms > ? AND start_ms < ?")
        args: list[Any] = [since_ms, until_ms, since_ms, until_ms]
        if deployment_id is not None:
            sql += " AND deployment_id=?"
            args.append(deployment_id)
        async with self._db.execute(sql + " ORDER BY start_ms", args) as cur:
            return [dict(r) for r in await cur.fetchall()]

    async def record_second(self, *, ends: dict[int, int],
                            usage: dict[tuple[int, int], UsageSums],
                            requests: list[tuple[Any, ...]]) -> None:
        """One meter tick in one transaction: billed intervals extended to `ends`
        ({interval id: end ms}), per-second usage {(deployment id, second): sums} added
        to its 1 s, 1 min and 1 h buckets, and the request rows of the last second."""
        if not (ends or usage or requests):
            return
        async with self._transaction() as db:
            if ends:
                await db.executemany(
                    "UPDATE billing SET end_ms=MAX(end_ms, ?) WHERE id=?",
                    [(end, interval) for interval, end in ends.items()])
            if usage:
                await db.executemany(_ADD_USAGE, [
                    (dep_id, step, second - second % step, *sums)
                    for (dep_id, second), sums in usage.items() for step in USAGE_STEPS])
            if requests:
                await db.executemany(
                    "INSERT INTO requests (deployment_id, deployment, owner, route, status,"
                    " outcome, started_ms, latency_ms, ttfb_ms, prompt_tokens,"
                    " completion_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", requests)

    async def prune(self, now_s: int, *, keep_s: dict[int, int], requests_keep_s: int) -> None:
        """Drop usage buckets older than their step's retention ({step: seconds}) and
        request rows older than `requests_keep_s`. The billing ledger is never pruned."""
        async with self._transaction() as db:
            for step, keep in keep_s.items():
                await db.execute("DELETE FROM usage WHERE step=? AND ts < ?",
                                 (step, now_s - keep))
            await db.execute("DELETE FROM requests WHERE started_ms < ?",
                             ((now_s - requests_keep_s) * 1000,))

    async def usage_series(self, *, step: int, source_step: int, since_s: int, until_s: int,
                           deployment_id: int | None = None) -> list[dict[str, Any]]:
        """Buckets of `step` seconds in [since, until), summed from the stored
        `source_step` buckets (a divisor of `step`), per deployment, oldest first."""
        sql = ("SELECT u.deployment_id, d.name AS deployment, (u.ts / ?) * ? AS t,"
               " SUM(samples) AS samples, SUM(cpu_percent_sum) AS cpu_percent_sum,"
               " SUM(memory_bytes_sum) AS memory_bytes_sum,"
               " MAX(memory_bytes_max) AS memory_bytes_max, SUM(requests) AS requests,"
               " SUM(errors) AS errors, SUM(latency_ms_sum) AS latency_ms_sum,"
               " SUM(prompt_tokens) AS prompt_tokens,"
               " SUM(completion_tokens) AS completion_tokens,"
               " SUM(gpu_samples) AS gpu_samples,"
               " SUM(gpu_memory_bytes_sum) AS gpu_memory_bytes_sum,"
               " MAX(gpu_memory_bytes_max) AS gpu_memory_bytes_max"
               " FROM usage u JOIN deployments d ON d.id = u.deployment_id"
               " WHERE u.step = ? AND u.ts >= ? AND u.ts < ?")
        args: list[Any] = [step, step, source_step, since_s, until_s]
        if deployment_id is not None:
            sql += " AND u.deployment_id = ?"
            args.append(deployment_id)
        sql += " GROUP BY u.deployment_id, t ORDER BY d.name, u.deployment_id, t"
        async with self._db.execute(sql, args) as cur:
            return [dict(r) for r in await cur.fetchall()]

    async def usage_buckets(self, deployment_id: int, step: int) -> list[dict[str, Any]]:
        async with self._db.execute("SELECT * FROM usage WHERE deployment_id=? AND step=?"
                                    " ORDER BY ts", (deployment_id, step)) as cur:
            return [dict(r) for r in await cur.fetchall()]

    async def request_rows(self, deployment: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM requests", []
        if deployment is not None:
            sql += " WHERE deployment=?"
            args.append(deployment)
        async with self._db.execute(sql + " ORDER BY id", args) as cur:
            return [dict(r) for r in await cur.fetchall()]

    async def billing_totals(self) -> dict[int, list[tuple[int, int, str]]]:
        """Per deployment id: (billed ms, rate, currency) for each rate and currency it
        was billed at. The money is multiplied out in Python: SQLite would turn a large
        product into a float."""
        totals: dict[int, list[tuple[int, int, str]]] = {}
        async with self._db.execute(
                "SELECT deployment_id, SUM(end_ms - start_ms), rate_micros_per_hour, currency"
                " FROM billing GROUP BY deployment_id, rate_micros_per_hour, currency") as cur:
            for dep_id, ms, rate, currency in await cur.fetchall():
                totals.setdefault(int(dep_id), []).append((int(ms), int(rate), str(currency)))
        return totals

    async def events(self, deployment_id: int, limit: int = 100) -> list[EventRow]:
        async with self._db.execute(
                "SELECT * FROM events WHERE deployment_id=? ORDER BY id DESC LIMIT ?",
                (deployment_id, limit)) as cur:
            rows = list(await cur.fetchall())
        return [EventRow(**dict(r)) for r in reversed(rows)]


@dataclass(frozen=True)
class UserRow:
    id: int
    name: str
    created_at: float


@dataclass(frozen=True)
class KeyRow:
    id: str
    user: str
    name: str | None
    hash: str
    created_at: float
    revoked_at: float | None


def _deployment(row: Any) -> DeploymentRow:
    return DeploymentRow(**dict(row))
