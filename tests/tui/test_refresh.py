"""Refreshing while deployments come and go keeps the cursor on a valid row."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random

import httpx

from tests.helpers import ADMIN_TOKEN, AUTH
from tests.tui.conftest import CHAT_MODEL
from tests.tui.pilot_helpers import names, select, table, until
from tests.tui.recorded import DEPLOYMENTS
from tui.app import BerthApp

SIZE = (140, 40)


def cursor_problem(pilot) -> str | None:
    t = table(pilot)
    if t.row_count == 0:
        return None
    if not 0 <= t.cursor_row < t.row_count:
        return f"cursor row {t.cursor_row} of {t.row_count}"
    if t.selected_name not in names(pilot):
        return f"selected {t.selected_name!r} is not a row"
    return None


async def watch_cursor(pilot, problems: list[str]) -> None:
    """Checks the cursor between every few refreshes until cancelled."""
    while True:
        if (problem := cursor_problem(pilot)) is not None:
            problems.append(problem)
        await asyncio.sleep(0.02)


async def test_refresh_while_the_api_creates_and_deletes(live) -> None:
    app = BerthApp(live.url, ADMIN_TOKEN, poll_s=0.1)
    churn = [f"churn-{i}" for i in range(3)]
    problems: list[str] = []
    async with httpx.AsyncClient(base_url=live.url, headers=AUTH, timeout=120) as api:

        async def create(name: str) -> None:
            resp = await api.post("/api/deployments", json={"name": name, "model": CHAT_MODEL,
                                                            "hardware": "micro"})
            assert resp.status_code == 201, resp.text

        async def delete(name: str) -> None:
            resp = await api.delete(f"/api/deployments/{name}")
            assert resp.status_code in (200, 404), resp.text

        try:
            async with app.run_test(size=SIZE) as pilot:
                await until(pilot, lambda: "chat" in names(pilot), 30, "the chat row")
                watcher = asyncio.create_task(watch_cursor(pilot, problems))
                try:
                    for _ in range(2):
                        await asyncio.gather(*(create(n) for n in churn))
                        await until(pilot, lambda: set(churn) <= set(names(pilot)), 30,
                                    "the new rows")
                        select(pilot, churn[-1])  # on the last row, which goes first
                        await delete(churn[-1])
                        await until(pilot, lambda: churn[-1] not in names(pilot), 30,
                                    "the last row to go")
                        assert table(pilot).selected_name in names(pilot)
                        select(pilot, "chat")  # on a row that stays while others go
                        await asyncio.gather(*(delete(n) for n in churn[:-1]))
                        await until(pilot, lambda: not set(churn) & set(names(pilot)), 30,
                                    "the rows to go")
                        assert table(pilot).selected_name == "chat"
                finally:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
        finally:
            await asyncio.gather(*(delete(n) for n in churn))
    assert problems == []


async def test_many_random_changes_keep_the_cursor(recorded) -> None:
    """Hundreds of additions, removals and reorderings (recorded answers, fixed seed)."""
    rng = random.Random(8)
    template = DEPLOYMENTS[0]
    pool = [dict(copy.deepcopy(template), name=f"dep-{i:02d}") for i in range(12)]
    app = BerthApp(recorded.url, "token", poll_s=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(names(pilot)) == 4, 20, "the rows")
        for step in range(150):
            current = rng.sample(pool, rng.randint(0, len(pool)))
            before = table(pilot).selected_name
            if rng.random() < 0.3 and names(pilot):
                await pilot.press(rng.choice(["down", "up", "end", "home", "pagedown"]))
                before = table(pilot).selected_name
            recorded.answers["/api/deployments"] = {"data": current}
            wanted = [d["name"] for d in current]
            await until(pilot, lambda w=wanted: names(pilot) == w, 20, f"step {step}")
            assert cursor_problem(pilot) is None, step
            if before in wanted:
                assert table(pilot).selected_name == before, step
