"""Fixtures of the console's tests: a real `berth serve` with the tiny chat model for
behaviour, and a server of recorded answers for snapshots (see recorded.py for why)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import BerthServer
from tests.tui.recorded import RecordedServer

CHAT_MODEL = "berth-demo/tiny-random-llama-chat"
PRELOADED = [{"name": "chat", "model": CHAT_MODEL, "hardware": "micro"}]


@pytest.fixture(scope="session")
def live(tmp_path_factory, tiny_models) -> Iterator[BerthServer]:
    """One real `berth serve` for every console test: deployment `chat` preloaded from
    its config. Each test leaves `chat` as it found it and deletes what it made."""
    server = BerthServer(tmp_path_factory.mktemp("berth-tui"), tiny_models.models_dir,
                         PRELOADED)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.kill_leftovers()
        server.remove_slices()


@pytest.fixture
def recorded() -> Iterator[RecordedServer]:
    server = RecordedServer().start()
    try:
        yield server
    finally:
        server.close()
