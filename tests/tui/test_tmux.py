"""`berth tui` in a real terminal: tmux runs it, send-keys drives it, capture-pane reads it."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.conftest import pid_alive
from tests.helpers import ADMIN_TOKEN

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """A tmux server of our own (`-L`), so nobody else's sessions are touched."""

    def __init__(self) -> None:
        self.socket = f"berth-tui-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                              text=True, timeout=30)
        if done.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def screen(self) -> str:
        try:
            return self("capture-pane", "-p", "-t", "tui")
        except AssertionError:  # the session is gone (the app quit)
            return ""

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen:\n{text}")
            time.sleep(0.2)

    def kill_server(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=30)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = Tmux()
    try:
        yield t
    finally:
        t.kill_server()


def test_berth_tui_in_tmux_shows_the_deployments(live, tmux) -> None:
    live.wait_status("chat", "ready", 120)
    # `exec`: the pane's process is `berth tui`, which execs `python -m tui`: one pid.
    # COLUMNS/LINES: under pytest the pane gets 80x24 in them, which beat the pty's size.
    command = (f"exec env -u COLUMNS -u LINES BERTH_TOKEN={shlex.quote(ADMIN_TOKEN)} "
               f"{shlex.quote(sys.executable)} -m server.cli tui --url {live.url}")
    tmux("new-session", "-d", "-s", "tui", "-x", "150", "-y", "40", command)
    pid = int(tmux("display-message", "-p", "-t", "tui", "#{pane_pid}").strip())
    try:
        screen = tmux.wait_for(lambda s: any(line.split()[:1] == ["chat"] and "ready" in line
                                             for line in s.splitlines())
                               and "connected" in s and "d Delete" in s, 60, "the chat row")
        row = next(line for line in screen.splitlines() if line.split()[:1] == ["chat"])
        assert "berth-demo/tiny-random-llama-chat" in row and "micro" in row
        assert "n New" in screen and "b Billing" in screen  # the footer's keys
        tmux("send-keys", "-t", "tui", "b")
        tmux.wait_for(lambda s: "per deployment" in s and "TOTAL" in s, 30, "billing")
        tmux("send-keys", "-t", "tui", "Escape")
        tmux.wait_for(lambda s: "NAME" in s and "STATUS" in s, 30, "the table again")
        tmux("send-keys", "-t", "tui", "C-q")
        deadline = time.monotonic() + 30
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(pid), "ctrl+q did not quit"
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
