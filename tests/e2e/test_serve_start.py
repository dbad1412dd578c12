"""`berth serve` refuses to start beside another server, without disturbing it."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from tests.e2e.conftest import CHAT_MODEL
from tests.helpers import write_config

pytestmark = pytest.mark.e2e


def _serve(config, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", "serve", "--config", str(config),
                           *extra], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_a_second_server_on_the_same_state_dir_is_refused(berth, tmp_path, models_dir):
    server = berth([{"name": "chat", "model": CHAT_MODEL, "hardware": "micro"}])
    before = server.wait_status("chat", "ready")
    events = len(server.events("chat"))

    # same config, another port: the state dir is the conflict
    done = _serve(server.config, "--port", "0")
    assert done.returncode == 2
    assert "another berth server" in done.stderr and str(server.proc.pid) in done.stderr
    assert "Traceback" not in done.stderr

    after = server.deployment("chat")
    assert (after["status"], after["pid"]) == ("ready", before["pid"])
    assert len(server.events("chat")) == events
    assert len(list((server.state_dir / "run").glob("*.sock"))) == 1

    # another state dir, the same port: refused before any engine starts
    other = write_config(tmp_path / "other.toml", state_dir=tmp_path / "other-state",
                         models_dir=models_dir, port=server.port,
                         deployments=[{"name": "chat", "model": CHAT_MODEL,
                                       "hardware": "micro"}])
    done = _serve(other)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{server.port}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "other-state" / "logs" / "chat.log").exists()


def test_a_second_server_on_the_same_slice_parent_is_refused(berth, tmp_path, models_dir):
    server = berth([{"name": "chat", "model": CHAT_MODEL, "hardware": "micro"}])
    pid = server.wait_status("chat", "ready")["pid"]
    parent = tomllib.loads(server.config.read_text())["node"]["slice_parent"]
    other = write_config(tmp_path / "other.toml", state_dir=tmp_path / "other-state",
                         models_dir=models_dir, port=0,
                         node={"slice_parent": parent, "cpus": 4, "memory": "8GiB"},
                         deployments=[{"name": "chat", "model": CHAT_MODEL,
                                       "hardware": "micro"}])
    done = _serve(other)
    assert done.returncode == 2
    assert f"slice parent {parent!r}" in done.stderr
    # the first server's engine was not taken for a stale one
    assert server.deployment("chat")["pid"] == pid
