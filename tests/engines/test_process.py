"""The real `python -m engines` process: socket, health, SIGTERM, exit codes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from engines import protocol
from engines.__main__ import _watch_parent
from engines.app import EngineState
from engines.protocol import Task

from .conftest import make_spec

REPO = Path(__file__).resolve().parents[2]


async def _spawn(spec_json: str, log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "engines",
            protocol.SPEC_ARG,
            spec_json,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )


async def _health(session: aiohttp.ClientSession) -> dict[str, Any] | None:
    try:
        async with session.get(f"http://engine{protocol.HEALTH}") as resp:
            body: dict[str, Any] = await resp.json()
            return body
    except (aiohttp.ClientConnectionError, FileNotFoundError):
        return None


async def test_engine_process_serves_then_exits_cleanly_on_sigterm(tiny_models, tmp_path) -> None:
    sock = tmp_path / "e.sock"
    sock.write_text("stale")  # a leftover file must not stop the engine from binding
    spec = replace(make_spec(tiny_models.chat, Task.TEXT, name="proc"), socket_path=str(sock))
    log = tmp_path / "engine.log"
    proc = await _spawn(spec.to_json(), log)
    try:
        states = []
        async with aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(sock))
        ) as session:
            async with asyncio.timeout(60):
                while (health := await _health(session)) is None or health["state"] != "ready":
                    if health:
                        states.append(health["state"])
                    assert proc.returncode is None, log.read_text()
                    await asyncio.sleep(0.05)
            # the socket answers while transformers is still being imported
            assert states and states[0] == "loading"
            assert health["pid"] == proc.pid
            assert health["context_length"] == 512
            body = {"prompt": "Hello", "max_tokens": 4, "temperature": 0}
            async with session.post(f"http://engine{protocol.COMPLETIONS}", json=body) as resp:
                assert resp.status == 200
                assert (await resp.json())["usage"]["completion_tokens"] <= 4
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = log.read_text()
    assert code == protocol.EXIT_OK, text
    assert not sock.exists()
    assert f"[proc pid {proc.pid}]" in text
    assert "received SIGTERM" in text


async def test_bad_spec_exits_with_its_code(tmp_path) -> None:
    log = tmp_path / "engine.log"
    proc = await _spawn('{"name": "x", "task": "painting"}', log)
    async with asyncio.timeout(30):
        code = await proc.wait()
    assert code == protocol.EXIT_BAD_SPEC
    assert "bad engine spec" in log.read_text()


async def test_parent_watch_asks_to_exit_when_the_parent_changes(tiny_models) -> None:
    state = EngineState(make_spec(tiny_models.chat, Task.TEXT))
    try:
        async with asyncio.timeout(5):
            await _watch_parent(state, parent=-1)  # never our parent: gone at the first look
            assert await state.exit_code == protocol.EXIT_PARENT_GONE
    finally:
        await state.close()
