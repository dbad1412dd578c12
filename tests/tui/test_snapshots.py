"""Every screen at a fixed size, drawn from recorded answers at a fixed time.

Recorded answers (recorded.py), not the live server: live numbers change every second
and a snapshot compares pixels. `label` replaces the server's URL in the banner because
the recorded server's port is chosen by the OS. Update with `--snapshot-update` and look
at the report before committing.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.pilot import Pilot
from textual.widgets import Input

from tests.tui.pilot_helpers import until
from tests.tui.recorded import NOW
from tui.app import BerthApp
from tui.screens.billing import BillingScreen
from tui.screens.confirm import ConfirmDelete, ConfirmStop
from tui.screens.deployments import DeploymentsScreen
from tui.screens.detail import DetailScreen
from tui.screens.logs import LogsScreen
from tui.screens.new_deployment import NewDeploymentScreen
from tui.widgets.deployment_table import DeploymentTable
from tui.widgets.series_plot import SeriesPlot

SIZE = (150, 42)
LABEL = "http://berth.example:8080"


def app_at(url: str) -> BerthApp:
    return BerthApp(url, "token", poll_s=0.2, clock=lambda: NOW, label=LABEL)


async def loaded(pilot: Pilot[None]) -> None:
    await until(pilot, lambda: isinstance(pilot.app.screen, DeploymentsScreen)
                and pilot.app.query_one(DeploymentTable).row_count == 4, 20, "the rows")


def then(*steps: Callable[[Pilot[None]], object]):
    async def run(pilot: Pilot[None]) -> None:
        await loaded(pilot)
        for step in steps:
            result = step(pilot)
            if result is not None:
                await result  # type: ignore[misc]
        for field in pilot.app.screen.query(Input):  # a blinking cursor is drawn or not
            field.cursor_blink = False  # by chance: hold it on
        await pilot.pause(0.3)  # a few more refreshes: nothing may move

    return run


def test_deployments(snap_compare, recorded) -> None:
    assert snap_compare(app_at(recorded.url), terminal_size=SIZE, run_before=then())


def test_deployments_cursor_on_third_row(snap_compare, recorded) -> None:
    async def down(pilot: Pilot[None]) -> None:
        await pilot.press("down", "down")

    assert snap_compare(app_at(recorded.url), terminal_size=SIZE, run_before=then(down))


def test_detail(snap_compare, recorded) -> None:
    async def open_chat(pilot: Pilot[None]) -> None:
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(pilot.app.screen, DetailScreen)
                    and pilot.app.screen.dep is not None
                    and all(p.points for p in pilot.app.screen.query(SeriesPlot)), 20,
                    "the plots")

    assert snap_compare(app_at(recorded.url), terminal_size=SIZE, run_before=then(open_chat))


def test_new_deployment(snap_compare, recorded) -> None:
    async def fill(pilot: Pilot[None]) -> None:
        await pilot.press("n")
        await until(pilot, lambda: isinstance(pilot.app.screen, NewDeploymentScreen)
                    and pilot.app.screen.models is not None, 20, "the form's lists")
        await pilot.press(*"chat-2")

    assert snap_compare(app_at(recorded.url), terminal_size=SIZE, run_before=then(fill))


def test_new_deployment_bad_name(snap_compare, recorded) -> None:
    async def fill(pilot: Pilot[None]) -> None:
        await pilot.press("n")
        await until(pilot, lambda: isinstance(pilot.app.screen, NewDeploymentScreen)
                    and pilot.app.screen.models is not None, 20, "the form's lists")
        await pilot.press(*"Chat")

    assert snap_compare(app_at(recorded.url), terminal_size=SIZE, run_before=then(fill))


def test_billing(snap_compare, recorded) -> None:
    async def billing(pilot: Pilot[None]) -> None:
        await pilot.press("b")
        await until(pilot, lambda: isinstance(pilot.app.screen, BillingScreen)
                    and pilot.app.screen.shown is not None, 20, "the billing tables")

    assert snap_compare(app_at(recorded.url), terminal_size=SIZE, run_before=then(billing))


def test_confirm_delete(snap_compare, recorded) -> None:
    async def delete(pilot: Pilot[None]) -> None:
        await pilot.press("d")
        await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmDelete))

    assert snap_compare(app_at(recorded.url), terminal_size=SIZE, run_before=then(delete))


def test_confirm_stop(snap_compare, recorded) -> None:
    async def stop(pilot: Pilot[None]) -> None:
        await pilot.press("s")  # chat is ready: stopping it asks first
        await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmStop))

    assert snap_compare(app_at(recorded.url), terminal_size=SIZE, run_before=then(stop))


def test_disconnected_80x24(snap_compare) -> None:
    """The long disconnected line wraps at 80 columns, whole."""
    app = BerthApp("http://127.0.0.1:9", "token", poll_s=0.2, clock=lambda: NOW,
                   label=LABEL)

    async def refused(pilot: Pilot[None]) -> None:
        await until(pilot, lambda: pilot.app.screen.has_class("-disconnected"), 20,
                    "the disconnected banner")

    assert snap_compare(app, terminal_size=(80, 24), run_before=refused)


def test_logs(snap_compare, recorded) -> None:
    async def logs(pilot: Pilot[None]) -> None:
        await pilot.press("l")
        await until(pilot, lambda: isinstance(pilot.app.screen, LogsScreen)
                    and pilot.app.screen.log_offset is not None, 20, "the log")

    assert snap_compare(app_at(recorded.url), terminal_size=SIZE, run_before=then(logs))


def test_disconnected(snap_compare) -> None:
    """Port 9 (discard) refuses: the banner says so and that it retries."""
    app = BerthApp("http://127.0.0.1:9", "token", poll_s=0.2, clock=lambda: NOW,
                   label=LABEL)

    async def refused(pilot: Pilot[None]) -> None:
        await until(pilot, lambda: pilot.app.screen.has_class("-disconnected"), 20,
                    "the disconnected banner")

    assert snap_compare(app, terminal_size=SIZE, run_before=refused)


# -- the same screens in the smallest terminal the console is made for -----------------

SMALL = (80, 24)


def test_deployments_80x24(snap_compare, recorded) -> None:
    assert snap_compare(app_at(recorded.url), terminal_size=SMALL, run_before=then())


def test_detail_80x24(snap_compare, recorded) -> None:
    async def open_chat(pilot: Pilot[None]) -> None:
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(pilot.app.screen, DetailScreen)
                    and pilot.app.screen.dep is not None
                    and all(p.points for p in pilot.app.screen.query(SeriesPlot)), 20,
                    "the plots")

    assert snap_compare(app_at(recorded.url), terminal_size=SMALL,
                        run_before=then(open_chat))


def test_new_deployment_80x24(snap_compare, recorded) -> None:
    async def fill(pilot: Pilot[None]) -> None:
        await pilot.press("n")
        await until(pilot, lambda: isinstance(pilot.app.screen, NewDeploymentScreen)
                    and pilot.app.screen.models is not None, 20, "the form's lists")
        await pilot.press(*"chat-2")

    assert snap_compare(app_at(recorded.url), terminal_size=SMALL, run_before=then(fill))


def test_billing_80x24(snap_compare, recorded) -> None:
    async def billing(pilot: Pilot[None]) -> None:
        await pilot.press("b")
        await until(pilot, lambda: isinstance(pilot.app.screen, BillingScreen)
                    and pilot.app.screen.shown is not None, 20, "the billing tables")

    assert snap_compare(app_at(recorded.url), terminal_size=SMALL, run_before=then(billing))
