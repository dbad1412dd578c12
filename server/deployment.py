"""The supervisor's handle on one deployment: what it runs, its state, its engine and the
live readings of its slice. The router, admin API, meter and metrics read it; only the
supervisor's run loop changes it."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from engines.protocol import Task
from server.config import Tier
from server.launcher import EngineProcess
from server.limits import Gate
from server.slices import Slice
from server.states import State
from server.usage import UsageMeter, process_reader


@dataclass(eq=False)
class Deployment:
    """The supervisor's handle on one deployment and its engine."""

    id: int
    name: str
    model: str
    tier: Tier
    owner: str
    task: Task | None
    dtype: str
    created_at: float
    source: str  # "config" (config.toml) or "api"
    currency: str
    socket_path: Path
    log_path: Path
    gate: Gate  # admission: max_concurrent requests at the engine, max_queued waiting
    state: State = State.PENDING
    reason: str | None = None
    pid: int | None = None
    restarts: int = 0
    ready_at: float | None = None
    retry_at: float | None = None
    model_path: Path | None = None
    trust_remote_code: bool = False
    usage: UsageMeter | None = None
    oom_kills: int = 0  # engines the kernel killed for this deployment's memory limit
    last_pid: int | None = None  # the engine that ran last (for events about its end)
    spawned_at: float | None = None  # wall time the current/last engine was spawned
    desired_running: bool = True
    slice: Slice | None = None
    process: EngineProcess | None = None
    client: aiohttp.ClientSession | None = None
    health: dict[str, Any] | None = None
    crashes: deque[float] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: str = "stopped"
    run_task: asyncio.Task[None] | None = None
    in_flight: int = 0  # requests the router is proxying to this engine now
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set while in_flight == 0
    deleting: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one lifecycle action at a time

    def __post_init__(self) -> None:
        self.idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()

    @property
    def ready(self) -> bool:
        return self.state is State.READY and self.client is not None


@dataclass(frozen=True)
class EngineLife:
    """One engine process, spawn to reap: what the meter bills when it ended between two
    ticks (an engine that lived under a second is billed too)."""

    dep: Deployment
    pid: int
    spawned_at: float
    exited_at: float


def slice_meter(slice_: Slice, pid: int) -> UsageMeter:
    """Read usage from the slice where it can (the whole slice), else from the process."""
    if slice_.usage() is None:
        return UsageMeter(process_reader(pid), "process")

    def read() -> tuple[float, int, int] | None:
        u = slice_.usage()
        return None if u is None else (u.cpu_seconds, u.memory_bytes, u.memory_peak_bytes)

    return UsageMeter(read, slice_.info.driver)
