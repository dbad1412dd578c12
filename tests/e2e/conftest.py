"""End-to-end: the real `berth serve` process, real engines, the official openai client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ADMIN_TOKEN, AUTH, write_config

CHAT_MODEL = "berth-demo/tiny-random-llama-chat"
EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class BerthServer:
    """A `berth serve` subprocess on a free port with a temp state dir."""

    def __init__(self, workdir: Path, models_dir: Path, deployments: list[dict[str, Any]],
                 **config: Any) -> None:
        self.port = free_port()
        self.state_dir = workdir / "state"
        self.config = write_config(workdir / "config.toml", state_dir=self.state_dir,
                                   models_dir=models_dir, port=self.port,
                                   deployments=deployments, **config)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=60, headers=AUTH)
        self.engine_pids: set[int] = set()

    def start(self) -> BerthServer:
        """Start (or, after stop(), start again on the same state dir and port)."""
        if self.http.is_closed:
            self.http = httpx.Client(base_url=self.url, timeout=60, headers=AUTH)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server.cli", "serve", "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, "BERTH_ADMIN_TOKEN": ADMIN_TOKEN})
        self.wait(lambda: self._get("/healthz") is not None, 30, "server answering")
        return self

    def _get(self, path: str) -> Any:
        try:
            resp = self.http.get(path)
        except httpx.HTTPError:
            return None
        return resp.json() if resp.status_code == 200 else None

    def deployment(self, name: str) -> dict[str, Any]:
        resp = self.http.get(f"/api/deployments/{name}")
        resp.raise_for_status()
        dep = resp.json()
        if dep.get("pid"):
            self.engine_pids.add(dep["pid"])
        return dep

    def events_offline(self, name: str) -> list[dict[str, Any]]:
        """The events of `name` read from the database (the server may be down)."""
        import sqlite3
        from datetime import UTC, datetime

        with sqlite3.connect(self.state_dir / "berth.db") as db:
            rows = db.execute(
                "SELECT e.at, e.status, e.reason, e.pid FROM events e JOIN deployments d"
                " ON d.id = e.deployment_id WHERE d.name = ? ORDER BY e.id", (name,)).fetchall()
        return [{"at": datetime.fromtimestamp(at, UTC).isoformat(), "status": status,
                 "reason": reason, "pid": pid} for at, status, reason, pid in rows]

    def events(self, name: str) -> list[dict[str, Any]]:
        return self.http.get(f"/api/deployments/{name}/events").json()["data"]

    def wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"berth serve exited {self.proc.returncode} while waiting "
                                     f"for {what}:\n{self.log_tail()}")
            if predicate():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.log_tail()}")
            time.sleep(0.1)

    def wait_status(self, name: str, status: str, timeout: float = 120) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def check() -> bool:
            nonlocal last
            last = self.deployment(name)
            return last["status"] == status

        self.wait(check, timeout, f"{name} to be {status}")
        return last

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Stop the server; return its exit code. Kills its group if it hangs."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.http.close()
        return self.proc.returncode

    def kill_leftovers(self) -> list[int]:
        """Engines still alive after the server is gone (orphans): killed, and returned."""
        alive = [p for p in self.engine_pids if pid_alive(p)]
        for pid in alive:
            os.kill(pid, signal.SIGKILL)
        return alive

    def remove_slices(self) -> None:
        """The slices a killed server could not remove (its parent is this server's own)."""
        import tomllib

        from server.slices import choose_driver

        parent = tomllib.loads(self.config.read_text())["node"]["slice_parent"]
        driver, _ = choose_driver("auto", parent=parent)
        driver.cleanup_stale()
        driver.remove_parent()


@pytest.fixture(scope="session")
def models_dir(tiny_models) -> Path:
    """The offline models of the default config (and the test ones), built once."""
    return tiny_models.models_dir


def _server_factory(tmp_path_factory, models_dir) -> Iterator[Any]:
    servers: list[BerthServer] = []

    def start(deployments: list[dict[str, Any]], **kw: Any) -> BerthServer:
        server = BerthServer(tmp_path_factory.mktemp("berth"), models_dir, deployments, **kw)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
        server.kill_leftovers()
        server.remove_slices()


@pytest.fixture
def berth(tmp_path_factory, models_dir) -> Iterator[Any]:
    """A factory of berth servers; each is stopped at the end, orphans are killed."""
    yield from _server_factory(tmp_path_factory, models_dir)


@pytest.fixture(scope="module")
def berth_module(tmp_path_factory, models_dir) -> Iterator[Any]:
    """Like `berth`, shared by the tests of one module."""
    yield from _server_factory(tmp_path_factory, models_dir)
