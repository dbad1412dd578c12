"""The cursor names what `s`, `r` and `d` act on: it stays on the same deployment (by
name) through resizes, column refits and refreshes, and stopping asks first (recorded
answers: no engine is touched)."""

from __future__ import annotations

from textual.widgets import Static

from tests.tui.pilot_helpers import names, table, until
from tests.tui.recorded import NOW
from tui.app import BerthApp
from tui.screens.confirm import ConfirmDelete, ConfirmStop
from tui.screens.deployments import DeploymentsScreen

SMALL, LARGE = (80, 24), (120, 40)


def app_at(url: str) -> BerthApp:
    return BerthApp(url, "token", poll_s=0.1, clock=lambda: NOW)


def question(app: BerthApp) -> str:
    return str(app.screen.query_one("#question", Static).visual)


def posts(recorded) -> list[str]:
    return [path for method, path, _ in recorded.calls if method in ("POST", "DELETE")]


async def test_the_cursor_survives_resizes_and_delete_names_its_row(recorded) -> None:
    app = app_at(recorded.url)
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: len(names(pilot)) == 4, 20, "the rows")
        await pilot.press("down")
        assert table(pilot).selected_name == "embed"
        narrow = table(pilot).column_keys
        await pilot.resize_terminal(*LARGE)
        await until(pilot, lambda: table(pilot).column_keys != narrow, 5, "the refit")
        assert table(pilot).selected_name == "embed"
        await pilot.pause(0.3)  # refreshes come and go: it stays
        assert table(pilot).selected_name == "embed"
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDelete))
        assert "embed" in question(app) and "chat" not in question(app)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, DeploymentsScreen))
        await pilot.resize_terminal(*SMALL)  # and back
        await until(pilot, lambda: table(pilot).column_keys == narrow, 5, "the refit")
        assert table(pilot).selected_name == "embed"
        await pilot.press("r")
        await until(pilot, lambda: posts(recorded), 5, "the restart call")
        assert posts(recorded) == ["/api/deployments/embed/restart"]


async def test_the_cursor_survives_a_column_refit_by_new_rows(recorded) -> None:
    """A longer row arriving above the cursor widens the columns (a rebuild) and moves
    the cursor's deployment down a row: the cursor goes with it."""
    app = app_at(recorded.url)
    rows = recorded.answers["/api/deployments"]["data"]
    async with app.run_test(size=LARGE) as pilot:
        await until(pilot, lambda: len(names(pilot)) == 4, 20, "the rows")
        await pilot.press("down", "down")
        assert table(pilot).selected_name == "big-one"
        long = dict(rows[0], name="a-much-longer-name-than-the-others")
        recorded.answers["/api/deployments"] = {"data": [long, *rows]}
        await until(pilot, lambda: len(names(pilot)) == 5, 5, "the new row")
        assert table(pilot).selected_name == "big-one"
        assert table(pilot).cursor_row == 3


async def test_stop_asks_and_names_the_deployment(recorded) -> None:
    app = app_at(recorded.url)
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: len(names(pilot)) == 4, 20, "the rows")
        await pilot.press("down")  # embed: loading, so `s` stops it
        await pilot.resize_terminal(*LARGE)
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmStop))
        assert "Stop deployment embed?" in question(app)
        await pilot.press("escape")  # cancel: nothing is sent, it keeps running
        await until(pilot, lambda: isinstance(app.screen, DeploymentsScreen))
        await pilot.pause(0.3)
        assert posts(recorded) == []
        assert table(pilot).get_cell("embed", "status").plain == "loading"
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmStop))
        await pilot.press("y")
        await until(pilot, lambda: posts(recorded), 5, "the stop call")
        assert posts(recorded) == ["/api/deployments/embed/stop"]


async def test_start_needs_no_confirmation(recorded) -> None:
    app = app_at(recorded.url)
    async with app.run_test(size=LARGE) as pilot:
        await until(pilot, lambda: len(names(pilot)) == 4, 20, "the rows")
        await pilot.press("down", "down", "down")  # old: stopped
        assert table(pilot).selected_name == "old"
        await pilot.press("s")
        await until(pilot, lambda: posts(recorded), 5, "the start call")
        assert isinstance(app.screen, DeploymentsScreen)
        assert posts(recorded) == ["/api/deployments/old/start"]
