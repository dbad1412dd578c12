"""The console: a Textual app on the admin API. Screens live in tui/screens/."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from tui.client import AdminClient


class BerthApp(App[None]):
    CSS_PATH = "berth.tcss"
    TITLE = "berth"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]
    # Screens narrower than 100 columns get `-narrow`: their panes stack and scroll.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]

    def __init__(self, url: str, token: str | None, *, poll_s: float = 1.0,
                 clock: Callable[[], float] = time.time, label: str | None = None) -> None:
        """`clock` and `label` exist for snapshot tests: a fixed time and server name
        give the same pixels on every run."""
        super().__init__()
        self.client = AdminClient(url, token)
        self.poll_s = poll_s
        self.clock = clock
        self.label = label or self.client.url

    def get_default_screen(self) -> Screen[None]:
        from tui.screens.deployments import DeploymentsScreen

        return DeploymentsScreen()

    async def on_unmount(self) -> None:
        await self.client.close()
