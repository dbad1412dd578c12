"""The admission gate (server.limits.Gate), on a real event loop."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable

import pytest

from server.config import DeploymentConfig, LimitsConfig
from server.limits import Gate, QueueFull, QueueTimeout

LONG = 60.0  # a queue timeout no test reaches


async def until(predicate: Callable[[], bool], steps: int = 1000) -> None:
    """Let other tasks run until `predicate` holds (counted loop steps, not time)."""
    for _ in range(steps):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not met")


class Crowd:
    """Tasks that enter a gate, note their turn, and hold the slot until let go."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.entered: list[int] = []
        self.go: dict[int, asyncio.Event] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}

    async def _visit(self, i: int) -> None:
        async with self.gate.slot():
            self.entered.append(i)
            await self.go[i].wait()

    async def join(self, i: int, *, queued: bool = False) -> asyncio.Task[None]:
        """Start visitor i and wait until it holds a slot (or, if `queued`, waits)."""
        before = self.gate.waiting
        self.go[i] = asyncio.Event()
        self.tasks[i] = asyncio.create_task(self._visit(i))
        if queued:
            await until(lambda: self.gate.waiting == before + 1)
        else:
            await until(lambda: i in self.entered)
        return self.tasks[i]

    async def leave(self, i: int) -> None:
        self.go[i].set()
        await self.tasks[i]


async def test_enters_at_once_below_the_limit():
    gate = Gate(2, 0, LONG, 1)
    async with gate.slot():
        assert (gate.active, gate.waiting) == (1, 0)
        async with gate.slot():
            assert (gate.active, gate.waiting) == (2, 0)
    assert (gate.active, gate.waiting) == (0, 0)


async def test_waiters_enter_in_fifo_order():
    gate = Gate(1, 10, LONG, 1)
    crowd = Crowd(gate)
    await crowd.join(0)
    for i in range(1, 6):
        await crowd.join(i, queued=True)
    assert (gate.active, gate.waiting) == (1, 5)
    for i in range(6):
        await until(lambda i=i: i in crowd.entered)
        await crowd.leave(i)
    assert crowd.entered == [0, 1, 2, 3, 4, 5]
    assert (gate.active, gate.waiting) == (0, 0)


async def test_a_freed_slot_goes_to_the_queue_not_to_a_newcomer():
    gate = Gate(1, 10, LONG, 1)
    crowd = Crowd(gate)
    async with gate.slot():
        await crowd.join(1, queued=True)
    # handed over synchronously: still taken, though visitor 1 has not run yet
    assert (gate.active, gate.waiting) == (1, 0)
    await crowd.join(2, queued=True)
    await until(lambda: crowd.entered == [1])
    await crowd.leave(1)
    await crowd.leave(2)
    assert crowd.entered == [1, 2]


async def test_queue_full_exactly_when_concurrent_plus_queued_are_in():
    gate = Gate(2, 3, LONG, 7, name="chat")
    crowd = Crowd(gate)
    await crowd.join(0)
    await crowd.join(1)
    for i in range(2, 5):
        await crowd.join(i, queued=True)
    assert (gate.active, gate.waiting) == (2, 3)
    with pytest.raises(QueueFull) as e:
        async with gate.slot():
            raise AssertionError("entered a full gate")
    assert str(e.value) == ("deployment 'chat' is at its limit: 2 requests running and "
                            "3 queued; retry in 7 s")
    assert (e.value.status, e.value.code, e.value.headers) == (
        429, "queue_full", {"Retry-After": "7"})
    assert (gate.active, gate.waiting) == (2, 3)  # the refusal left no trace
    await crowd.leave(0)  # one queued visitor moves up: room for one more in the queue
    await crowd.join(5, queued=True)
    with pytest.raises(QueueFull):
        async with gate.slot():
            pass
    for i in range(1, 6):
        await until(lambda i=i: i in crowd.entered)
        await crowd.leave(i)
    assert crowd.entered == [0, 1, 2, 3, 4, 5]


async def test_no_queue_refuses_as_soon_as_the_slots_are_taken():
    gate = Gate(1, 0, LONG, 1)
    async with gate.slot():
        with pytest.raises(QueueFull):
            async with gate.slot():
                pass
    async with gate.slot():
        assert gate.active == 1


async def test_a_wait_past_the_timeout_raises_and_leaves_no_trace():
    gate = Gate(1, 5, 0.05, 3, name="embed")
    crowd = Crowd(gate)
    await crowd.join(0)
    with pytest.raises(QueueTimeout) as e:
        async with asyncio.timeout(10):  # generous: only guards against a hang
            async with gate.slot():
                raise AssertionError("entered a taken gate")
    assert str(e.value) == ("deployment 'embed' is at its limit: waited 0.05 s for one of "
                            "its 1 request slots; retry in 3 s")
    assert (e.value.status, e.value.code, e.value.headers) == (
        503, "queue_timeout", {"Retry-After": "3"})
    assert (gate.active, gate.waiting) == (1, 0)
    await crowd.leave(0)  # the slot is not handed to the waiter that gave up
    assert (gate.active, gate.waiting) == (0, 0)
    async with gate.slot():
        assert gate.active == 1


async def test_a_timed_out_waiter_frees_its_queue_place():
    gate = Gate(1, 1, 0.05, 1)
    crowd = Crowd(gate)
    await crowd.join(0)
    with pytest.raises(QueueTimeout):
        async with asyncio.timeout(10):
            async with gate.slot():
                pass
    await crowd.join(1, queued=True)  # the place is free again
    await crowd.leave(0)
    await until(lambda: 1 in crowd.entered)
    await crowd.leave(1)
    assert (gate.active, gate.waiting) == (0, 0)


async def test_a_cancelled_waiter_leaves_the_queue_at_once_and_never_enters():
    gate = Gate(1, 2, LONG, 1)
    crowd = Crowd(gate)
    await crowd.join(0)
    await crowd.join(1, queued=True)
    await crowd.join(2, queued=True)
    with pytest.raises(QueueFull):
        async with gate.slot():
            pass
    crowd.tasks[1].cancel()
    with pytest.raises(asyncio.CancelledError):
        await crowd.tasks[1]
    assert (gate.active, gate.waiting) == (1, 1)
    await crowd.join(3, queued=True)  # its queue place is free again
    await crowd.leave(0)
    for i in (2, 3):
        await until(lambda i=i: i in crowd.entered)
        await crowd.leave(i)
    assert crowd.entered == [0, 2, 3]
    assert (gate.active, gate.waiting) == (0, 0)


async def test_a_waiter_cancelled_as_it_is_given_the_slot_passes_it_on():
    gate = Gate(1, 5, LONG, 1)
    crowd = Crowd(gate)
    async with gate.slot():
        await crowd.join(1, queued=True)
        await crowd.join(2, queued=True)
    crowd.tasks[1].cancel()  # the slot is handed to 1, which has not run yet
    with pytest.raises(asyncio.CancelledError):
        await crowd.tasks[1]
    await until(lambda: 2 in crowd.entered)
    assert (gate.active, gate.waiting) == (1, 0)
    await crowd.leave(2)
    assert crowd.entered == [2]
    assert (gate.active, gate.waiting) == (0, 0)


async def test_a_cancelled_holder_releases_its_slot_to_the_next_waiter():
    gate = Gate(1, 5, LONG, 1)
    crowd = Crowd(gate)
    await crowd.join(0)
    await crowd.join(1, queued=True)
    crowd.tasks[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await crowd.tasks[0]
    await until(lambda: 1 in crowd.entered)
    await crowd.leave(1)
    assert (gate.active, gate.waiting) == (0, 0)
    holder = await crowd.join(2)
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    assert (gate.active, gate.waiting) == (0, 0)


async def test_an_exception_inside_the_slot_releases_it():
    gate = Gate(1, 5, LONG, 1)
    crowd = Crowd(gate)
    with pytest.raises(RuntimeError, match="engine fell over"):
        async with gate.slot():
            await crowd.join(1, queued=True)
            raise RuntimeError("engine fell over")
    await until(lambda: 1 in crowd.entered)
    await crowd.leave(1)
    assert (gate.active, gate.waiting) == (0, 0)
    with pytest.raises(ValueError):
        async with gate.slot():
            raise ValueError
    assert gate.active == 0


async def test_500_visitors_cancelled_at_random_points_leave_the_gate_clean():
    rng = random.Random(20240611)
    gate = Gate(3, 40, 0.05, 1)
    holding = most = 0
    seen: Counter[str] = Counter()  # how each visit ended, and where the cancelled were

    async def visit() -> None:
        nonlocal holding, most
        phase = "before"
        try:
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)
            phase = "queued"
            async with gate.slot():
                phase = "holding"
                holding += 1
                most = max(most, holding)
                try:
                    for _ in range(rng.randrange(30)):
                        await asyncio.sleep(0)
                    if rng.random() < 0.05:
                        await asyncio.sleep(0.001)  # now and then a real wait: timeouts
                    if rng.random() < 0.1:
                        raise RuntimeError("failed request")
                finally:
                    holding -= 1
            phase = "after"
        except asyncio.CancelledError:
            seen[f"cancelled {phase}"] += 1
            raise

    async def cancel_later(task: asyncio.Task[None], steps: int) -> None:
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()

    tasks, cancellers = [], []
    for _ in range(500):
        task = asyncio.create_task(visit())
        tasks.append(task)
        if rng.random() < 0.5:
            cancellers.append(asyncio.create_task(cancel_later(task, rng.randrange(200))))
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)
        assert gate.active <= 3 and gate.waiting <= 40
    async with asyncio.timeout(60):  # generous: only guards against a hang
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*cancellers)
    seen.update("done" if r is None else type(r).__name__ for r in results)
    assert set(seen) <= {"done", "CancelledError", "RuntimeError", "QueueFull", "QueueTimeout",
                         "cancelled before", "cancelled queued", "cancelled holding"}, seen
    assert seen["done"] and seen["cancelled queued"] and seen["cancelled holding"], seen
    assert most <= 3
    assert (gate.active, gate.waiting) == (0, 0)
    crowd = Crowd(gate)  # and it still admits, all the way up to its limits
    for i in range(3):
        await crowd.join(i)
    for i in range(3, 43):
        await crowd.join(i, queued=True)
    with pytest.raises(QueueFull):
        async with gate.slot():
            pass
    for i in range(43):
        await until(lambda i=i: i in crowd.entered)
        await crowd.leave(i)
    assert crowd.entered == list(range(43))
    assert (gate.active, gate.waiting) == (0, 0)


def test_from_config_takes_the_deployment_overrides():
    limits = LimitsConfig(max_concurrent=4, max_queued=32, queue_timeout_s=30.0,
                          retry_after_s=2)
    plain = Gate.from_config("chat", limits)
    assert (plain.max_concurrent, plain.max_queued, plain.queue_timeout_s,
            plain.retry_after_s, plain.name) == (4, 32, 30.0, 2, "chat")
    dep = DeploymentConfig(name="chat", model="m", hardware="micro", max_concurrent=1,
                           max_queued=0)
    own = Gate.from_config("chat", limits, dep)
    assert (own.max_concurrent, own.max_queued) == (1, 0)
    half = Gate.from_config("chat", limits, DeploymentConfig(
        name="chat", model="m", hardware="micro", max_queued=5))
    assert (half.max_concurrent, half.max_queued) == (4, 5)


@pytest.mark.parametrize("args", [(0, 1, 1.0, 1), (1, -1, 1.0, 1), (1, 1, 0.0, 1),
                                  (1, 1, 1.0, 0)])
def test_impossible_limits_are_refused(args):
    with pytest.raises(ValueError):
        Gate(*args)
