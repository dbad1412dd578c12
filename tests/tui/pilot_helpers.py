"""Waiting for what the console shows, under Pilot."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from textual.pilot import Pilot

from tui.screens.deployments import DeploymentsScreen
from tui.widgets.deployment_table import DeploymentTable


async def until(pilot: Pilot[None], predicate: Callable[[], object], within_s: float = 60,
                what: str = "the condition") -> None:
    """Let the app run until `predicate()` is true (a deadline, not a timed assertion:
    it only bounds how long a broken app may take to fail)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def table(pilot: Pilot[None]) -> DeploymentTable:
    return pilot.app.query_one(DeploymentTable) if isinstance(
        pilot.app.screen, DeploymentsScreen) else pilot.app.screen_stack[0].query_one(
        DeploymentTable)


def names(pilot: Pilot[None]) -> list[str]:
    t = table(pilot)
    return [str(row.key.value) for row in t.ordered_rows]


def status_of(pilot: Pilot[None], name: str) -> str | None:
    t = table(pilot)
    if name not in names(pilot):
        return None
    return str(t.get_cell(name, "status").plain)


def select(pilot: Pilot[None], name: str) -> None:
    t = table(pilot)
    t.move_cursor(row=t.get_row_index(name))
