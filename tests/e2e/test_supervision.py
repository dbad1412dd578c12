"""The supervisor against real engine processes: crashes, hangs, repeated failures."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.e2e.conftest import CHAT_MODEL, pid_alive

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(berth_module, models_dir, tmp_path_factory):
    # A model folder whose weights are garbage: the engine fails to load, every time.
    broken = tmp_path_factory.mktemp("broken") / "model"
    broken.mkdir()
    (broken / "config.json").write_text((models_dir / CHAT_MODEL / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"\x00not weights")
    server = berth_module(
        [{"name": "victim", "model": CHAT_MODEL, "hardware": "micro"},
         {"name": "doomed", "model": str(broken), "hardware": "micro", "task": "text"}],
        supervisor={"crash_limit": 3, "crash_window_s": 300.0})
    server.wait_status("victim", "ready")
    return server


def _complete(server, name: str):
    return server.http.post(f"/endpoints/{name}/v1/completions",
                            json={"prompt": "hello", "max_tokens": 4, "temperature": 0})


def test_kill_9_engine_comes_back_by_itself(server):
    before = server.deployment("victim")
    assert _complete(server, "victim").status_code == 200
    os.kill(before["pid"], signal.SIGKILL)

    # While it is down or loading, calls are 503 with Retry-After, never a hang or a 500.
    server.wait(lambda: server.deployment("victim")["status"] != "ready", 10, "crash noticed")
    server.wait(lambda: server.deployment("victim")["status"] == "loading", 30, "loading")
    resp = _complete(server, "victim")
    assert resp.status_code == 503
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.json()["error"]["code"] == "deployment_not_ready"

    after = server.wait_status("victim", "ready")
    assert after["pid"] != before["pid"]
    assert after["restarts"] == before["restarts"] + 1
    assert _complete(server, "victim").status_code == 200
    states = [(e["status"], e["reason"]) for e in server.events("victim")]
    assert ("crashed", "killed by SIGKILL") in states
    i = states.index(("crashed", "killed by SIGKILL"))
    assert [s for s, _ in states[i:]] == ["crashed", "starting", "loading", "ready"]


def test_hung_engine_is_killed_and_restarted(server):
    before = server.wait_status("victim", "ready")
    os.kill(before["pid"], signal.SIGSTOP)  # alive, but answers nothing
    try:
        server.wait(lambda: server.deployment("victim")["status"] == "crashed", 30,
                    "hang noticed")
    finally:
        if before["pid"] and os.path.exists(f"/proc/{before['pid']}"):
            os.kill(before["pid"], signal.SIGCONT)
    crashed = [e for e in server.events("victim") if e["status"] == "crashed"]
    assert crashed[-1]["reason"].startswith("health timeout")
    after = server.wait_status("victim", "ready")
    assert after["pid"] != before["pid"]


def test_engine_that_never_loads_ends_failed(server):
    dep = server.wait_status("doomed", "failed", timeout=180)
    assert "3 crashes" in dep["reason"]
    assert "model failed to load" in dep["reason"]
    events = server.events("doomed")
    crashes = [e for e in events if e["status"] == "crashed"]
    assert len(crashes) == 2  # the third crash is recorded as `failed`
    # the backoff doubled between attempts
    starts = [e["at"] for e in events if e["status"] == "starting"]
    assert len(starts) == 3
    resp = _complete(server, "doomed")
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "deployment_failed"
    assert dep["pid"] is None


def test_sigterm_stops_every_engine_and_leaves_nothing(berth):
    server = berth([{"name": "chat", "model": CHAT_MODEL, "hardware": "micro"}])
    pid = server.wait_status("chat", "ready")["pid"]
    sockets = list((server.state_dir / "run").glob("*.sock"))
    assert len(sockets) == 1
    assert server.stop(signal.SIGTERM) == 0
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.kill_leftovers() == []
    assert list((server.state_dir / "run").glob("*.sock")) == []
    log = server.log_tail(200)
    assert "stopping" in log and "server shutdown" in log


def test_server_killed_with_sigkill_leaves_no_orphan_engine(berth):
    server = berth([{"name": "chat", "model": CHAT_MODEL, "hardware": "micro"}])
    pid = server.wait_status("chat", "ready")["pid"]
    server.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    # the engine noticed its parent was gone and exited by itself (else: an orphan)
    assert server.kill_leftovers() == []
