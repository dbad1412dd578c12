"""Always-on: deployments come back after the server dies; stopped ones stay stopped."""

from __future__ import annotations

import signal
import sqlite3
import time

import pytest

from tests.e2e.conftest import CHAT_MODEL, pid_alive

pytestmark = pytest.mark.e2e


def test_sigkill_server_then_restart_restores_what_was_running(berth):
    server = berth([{"name": "chat", "model": CHAT_MODEL, "hardware": "micro"}])
    assert server.http.post("/api/users", json={"name": "ana"}).status_code == 201
    for name in ("two", "three"):
        resp = server.http.post("/api/deployments", json={
            "name": name, "model": CHAT_MODEL, "hardware": "micro", "owner": "ana"})
        assert resp.status_code == 201, resp.text
    old_pids = {name: server.wait_status(name, "ready")["pid"]
                for name in ("chat", "two", "three")}
    assert server.http.post("/api/deployments/three/stop").json()["status"] == "stopped"

    server.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in old_pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in old_pids.values() if pid_alive(p)] == []  # no orphan engine

    server.start()
    for name in ("chat", "two"):
        dep = server.wait_status(name, "ready")
        assert dep["pid"] != old_pids[name]
    two = server.deployment("two")
    assert (two["model"], two["hardware"], two["owner"]) == (CHAT_MODEL, "micro", "ana")
    three = server.deployment("three")
    assert (three["status"], three["pid"]) == ("stopped", None)
    time.sleep(1)
    assert server.deployment("three")["status"] == "stopped"

    with sqlite3.connect(server.state_dir / "berth.db") as db:
        rows = db.execute("SELECT name, COUNT(*) FROM deployments WHERE deleted_at IS NULL"
                          " GROUP BY name ORDER BY name").fetchall()
    assert rows == [("chat", 1), ("three", 1), ("two", 1)]

    # a clean stop and start again: the same three, still no duplicates
    assert server.stop(signal.SIGTERM) == 0
    server.start()
    server.wait_status("two", "ready")
    assert server.deployment("three")["status"] == "stopped"
    names = sorted(d["name"] for d in server.http.get("/api/deployments").json()["data"])
    assert names == ["chat", "three", "two"]
