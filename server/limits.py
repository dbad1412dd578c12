"""The admission gate of one deployment: how many requests its engine serves at once,
how many may wait for a turn, and for how long.

A request enters at once while fewer than `max_concurrent` are active; else it waits
in FIFO order if fewer than `max_queued` are waiting; else it is refused at once
(QueueFull, 429). A wait longer than `queue_timeout_s` ends in QueueTimeout (503).
Both carry Retry-After. A freed slot is handed straight to the first waiter, so a
request arriving meanwhile cannot overtake the queue. A waiter that gives up
(cancelled: its client went away) leaves the queue at once and never takes a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from server.config import DeploymentConfig, LimitsConfig
from server.errors import ApiError, Unavailable


class QueueFull(ApiError):
    """Every slot is taken and the queue is full: try again later."""

    status = 429
    type = "rate_limit_error"


class QueueTimeout(Unavailable):
    """Waited `queue_timeout_s` for a slot without getting one."""


class Gate:
    """At most `max_concurrent` holders of a slot, at most `max_queued` waiting ones."""

    def __init__(self, max_concurrent: int, max_queued: int, queue_timeout_s: float,
                 retry_after_s: int, *, name: str = "") -> None:
        if max_concurrent < 1 or max_queued < 0 or queue_timeout_s <= 0 or retry_after_s < 1:
            raise ValueError("expected max_concurrent >= 1, max_queued >= 0, "
                             "queue_timeout_s > 0 and retry_after_s >= 1")
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.queue_timeout_s = queue_timeout_s
        self.retry_after_s = retry_after_s
        self.name = name
        self._retry_after = {"Retry-After": str(retry_after_s)}
        self._active = 0
        # True: the slot was handed over; False: timed out. A cancelled future may stay
        # here until the next release skips it (its task removes it when it resumes).
        self._waiters: deque[asyncio.Future[bool]] = deque()

    @classmethod
    def from_config(cls, name: str, limits: LimitsConfig,
                    deployment: DeploymentConfig | None = None) -> Gate:
        """The gate of deployment `name`: [limits], with its [[deployments]] overrides."""
        concurrent = deployment.max_concurrent if deployment else None
        queued = deployment.max_queued if deployment else None
        return cls(limits.max_concurrent if concurrent is None else concurrent,
                   limits.max_queued if queued is None else queued,
                   limits.queue_timeout_s, limits.retry_after_s, name=name)

    @property
    def active(self) -> int:
        """Requests holding a slot now."""
        return self._active

    @property
    def waiting(self) -> int:
        """Requests queued for a slot now."""
        return sum(not f.done() for f in self._waiters)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the body; raise QueueFull or QueueTimeout when none comes."""
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    async def _acquire(self) -> None:
        if self._active < self.max_concurrent and not self._waiters:
            self._active += 1
            return
        if self.waiting >= self.max_queued:
            raise QueueFull(self._message(f"{self._active} requests running and "
                                          f"{self.waiting} queued"),
                            code="queue_full", headers=self._retry_after)
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(turn)
        timer = loop.call_later(self.queue_timeout_s, self._expire, turn)
        try:
            granted = await turn
        except BaseException:  # cancelled: leave the queue, or pass on a slot just given
            if turn.done() and not turn.cancelled() and turn.result():
                self._release()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(turn)
            raise
        finally:
            timer.cancel()
        if not granted:
            raise QueueTimeout(self._message(
                f"waited {self.queue_timeout_s:g} s for one of its {self.max_concurrent} "
                "request slots"), code="queue_timeout", headers=self._retry_after)

    def _release(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():  # skip waiters cancelled since they queued
                turn.set_result(True)  # the slot passes on: `_active` stays
                return
        self._active -= 1

    def _expire(self, turn: asyncio.Future[bool]) -> None:
        if not turn.done():
            self._waiters.remove(turn)
            turn.set_result(False)

    def _message(self, state: str) -> str:
        who = f"deployment {self.name!r}" if self.name else "the deployment"
        return f"{who} is at its limit: {state}; retry in {self.retry_after_s} s"
