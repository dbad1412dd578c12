"""A crashed deployment's "retrying in N s" (and the disconnected banner's) counts down
every second from the server's retry time, between polls, on the app's clock."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Static

from tests.tui.pilot_helpers import names, status_of, until
from tests.tui.recorded import NOW
from tui.app import BerthApp
from tui.screens.detail import DetailScreen
from tui.widgets.banner import ConnectionBanner

SIZE = (140, 40)


def deployment_polls(recorded) -> int:
    return sum(path == "/api/deployments" for _, path, _ in recorded.calls)


async def test_the_table_counts_down_between_polls(recorded) -> None:
    now = [NOW]  # big-one crashed; the server says it restarts at NOW + 12 s
    app = BerthApp(recorded.url, "token", poll_s=3600, clock=lambda: now[0])
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(names(pilot)) == 4, 20, "the rows")
        assert status_of(pilot, "big-one") == "crashed, retry in 12 s"
        polls = deployment_polls(recorded)
        now[0] += 5
        await until(pilot, lambda: status_of(pilot, "big-one") == "crashed, retry in 7 s",
                    3, "7 s")
        now[0] += 7
        await until(pilot, lambda: status_of(pilot, "big-one") == "crashed, retry now",
                    3, "now")
        assert deployment_polls(recorded) == polls  # the clock did it, not a new answer
        assert status_of(pilot, "chat") == "ready"


async def test_the_detail_title_counts_down(recorded) -> None:
    now = [NOW]
    app = BerthApp(recorded.url, "token", poll_s=3600, clock=lambda: now[0])
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(names(pilot)) == 4, 20, "the rows")
        app.push_screen(DetailScreen("big-one"))
        await until(pilot, lambda: isinstance(app.screen, DetailScreen)
                    and app.screen.dep is not None, 20, "the detail")

        def title() -> str:
            return str(app.screen.query_one("#title", Static).visual)

        assert "(oom_killed; retrying in 12 s)" in title()
        now[0] += 3
        await until(pilot, lambda: "(oom_killed; retrying in 9 s)" in title(), 3, "9 s")


class ClockApp(App[None]):
    """A bare app with the clock the banner reads (BerthApp's `clock`)."""

    def __init__(self, clock) -> None:
        super().__init__()
        self.clock = clock

    def compose(self) -> ComposeResult:
        yield ConnectionBanner("http://h")


async def test_the_disconnected_banner_counts_down() -> None:
    now = [1000.0]
    app = ClockApp(lambda: now[0])
    async with app.run_test(size=(80, 24)) as pilot:
        banner = app.query_one(ConnectionBanner)
        banner.set_down("refused", 5)
        assert "retrying in 5 s: refused" in str(banner.visual)
        now[0] += 2
        await until(pilot, lambda: "retrying in 3 s" in str(banner.visual), 3, "3 s")
        now[0] += 10
        await until(pilot, lambda: "retrying now" in str(banner.visual), 3, "now")
