from __future__ import annotations

import os
import stat

from server.store import MIGRATIONS, Store


async def test_migrates_an_empty_database(tmp_path):
    store = await Store.open(tmp_path / "berth.db")
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        assert {"deployments", "events", "schema_migrations"} <= set(await store.tables())
        assert await store.journal_mode() == "wal"
        assert stat.S_IMODE(os.stat(tmp_path / "berth.db").st_mode) == 0o600
    finally:
        await store.close()
    # Reopening applies nothing twice.
    store = await Store.open(tmp_path / "berth.db")
    try:
        assert await store.schema_version() == len(MIGRATIONS)
    finally:
        await store.close()


async def test_transitions_are_recorded_as_events(tmp_path):
    store = await Store.open(tmp_path / "berth.db")
    try:
        row = await store.upsert_config_deployment(
            name="chat", model="m", hardware="micro", owner="admin", task=None,
            status="pending")
        await store.record_transition(row.id, status="starting", reason="spawn", pid=42,
                                      restarts=0, ready_at=None, at=1.0)
        await store.record_transition(row.id, status="ready", reason="health ok", pid=42,
                                      restarts=0, ready_at=2.0, at=2.0)
        events = await store.events(row.id)
        assert [(e.status, e.reason, e.pid) for e in events] == [
            ("starting", "spawn", 42), ("ready", "health ok", 42)]
        again = await store.upsert_config_deployment(
            name="chat", model="m2", hardware="small", owner="admin", task=None,
            status="pending")
        assert again.id == row.id
        assert (again.model, again.hardware, again.status) == ("m2", "small", "ready")
    finally:
        await store.close()
