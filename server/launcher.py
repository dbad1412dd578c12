"""Where an engine runs: here, a local subprocess (`python -m engines`).

This is the one part a cluster placement (a Ray actor per deployment) would replace:
the supervisor only needs `spawn()` and the `EngineProcess` it returns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Protocol

from engines import protocol
from engines.protocol import SPEC_ARG, EngineSpec

log = logging.getLogger(__name__)

PARENT_PID_ENV = "BERTH_PARENT_PID"
_SOURCE_ROOT = str(Path(protocol.__file__).resolve().parents[1])


class EngineProcess(Protocol):
    pid: int

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def signal(self, sig: int) -> None: ...


class LocalProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self.pid = proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def wait(self) -> int:
        return await self._proc.wait()

    def signal(self, sig: int) -> None:
        """Signal the engine's whole process group, while it has not been reaped."""
        if self._proc.returncode is not None:
            return
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass


class LocalLauncher:
    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    async def spawn(self, spec: EngineSpec, log_path: Path, *,
                    command_prefix: list[str] | None = None,
                    env: dict[str, str] | None = None) -> LocalProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        child_env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
            PARENT_PID_ENV: str(os.getpid()),
            # the engines of this server's own checkout, whatever else is installed
            "PYTHONPATH": os.pathsep.join(
                p for p in (_SOURCE_ROOT, os.environ.get("PYTHONPATH")) if p),
            **(env or {}),
        }
        argv = [*(command_prefix or []), self.python, "-m", "engines", SPEC_ARG, spec.to_json()]
        with open(log_path, "ab") as logf:
            # stdin closed: remote model code can prompt. Own session: a Ctrl-C in the
            # server's terminal reaches the supervisor, which stops engines in order.
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=logf,
                stderr=asyncio.subprocess.STDOUT, env=child_env, start_new_session=True,
                cwd=str(log_path.parent))
        log.info("spawned engine %s pid %d (log %s)", spec.name, proc.pid, log_path)
        return LocalProcess(proc)

