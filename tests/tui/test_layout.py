"""Every screen is usable in an 80x24 terminal (and still at 120x40): its key widgets
can be brought into view whole, inside the screen, at a size they can be read at.
Recorded answers (recorded.py), so the content is the same on every run."""

from __future__ import annotations

import pytest
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import DataTable, Input, OptionList
from textual.widgets._footer import FooterKey

from tests.tui.pilot_helpers import names, table, until
from tests.tui.recorded import NOW
from tui.app import BerthApp
from tui.screens.billing import BillingScreen
from tui.screens.deployments import DeploymentsScreen
from tui.screens.detail import DetailScreen
from tui.screens.logs import LogsScreen
from tui.screens.new_deployment import NewDeploymentScreen
from tui.widgets.deployment_table import COLUMNS, DeploymentTable, fit_columns
from tui.widgets.series_plot import SeriesPlot

SMALL, LARGE = (80, 24), (120, 40)
ISO_TIME = "2026-12-03T10:00:00+01:00"


def app_at(url: str) -> BerthApp:
    return BerthApp(url, "token", poll_s=0.2, clock=lambda: NOW)


async def in_view(pilot: Pilot[None], widget: Widget, width: int = 1, height: int = 1) -> Region:
    """Scrolls `widget` into view and checks that all of it is on the screen, at least
    `width` x `height` cells; gives its region."""
    screen = pilot.app.screen
    screen.scroll_to_widget(widget, animate=False)
    await pilot.pause(0.05)
    geometry = screen.find_widget(widget)
    region = geometry.region
    what = f"{widget!r} at {region} of {screen.region}"
    assert region.width >= width and region.height >= height, what
    assert screen.region.contains_region(region), what
    assert region.intersection(geometry.clip) == region, f"{what} is cut by {geometry.clip}"
    return region


async def footer_fits(pilot: Pilot[None]) -> None:
    keys = list(pilot.app.screen.query(FooterKey))
    assert keys
    for key in keys:
        await in_view(pilot, key, width=3)


async def open_screen(pilot: Pilot[None], key: str | None, screen_type: type,
                      ready=lambda s: True) -> None:
    app = pilot.app
    await until(pilot, lambda: len(names(pilot)) == 4, 20, "the rows")
    if key:
        await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, screen_type) and ready(app.screen), 20,
                f"the {screen_type.__name__}")


def one_currency(recorded) -> None:
    """`old` was billed in two currencies (recorded.py): its COST is twice as wide."""
    for dep in recorded.answers["/api/deployments"]["data"]:
        dep["billing"]["costs"] = {"USD": dep["billing"]["cost"]}


@pytest.mark.parametrize("size", [SMALL, LARGE])
async def test_deployments_fit(recorded, size) -> None:
    one_currency(recorded)
    app = app_at(recorded.url)
    async with app.run_test(size=size) as pilot:
        await open_screen(pilot, None, DeploymentsScreen)
        t = app.screen.query_one(DeploymentTable)
        region = await in_view(pilot, t, width=size[0] - 2, height=5)
        columns = sum(c.get_render_width(t) for c in t.columns.values())
        assert columns <= region.width, (t.column_keys, columns, region.width)
        assert {"name", "status", "memory", "cost"} <= set(t.column_keys)
        if size == LARGE:  # room for nearly all at 120, the model's too
            assert "model" in t.column_keys and len(t.column_keys) >= len(COLUMNS) - 1
        await in_view(pilot, app.screen.query_one("#summary"), width=40)
        await footer_fits(pilot)


@pytest.mark.parametrize("size", [SMALL, LARGE])
async def test_two_currencies_fit_whole(recorded, size) -> None:
    """A deployment billed in two currencies shows both, whole: less needed columns go
    first (at 120 columns: rate, requests/s, uptime)."""
    app = app_at(recorded.url)
    async with app.run_test(size=size) as pilot:
        await open_screen(pilot, None, DeploymentsScreen)
        t = app.screen.query_one(DeploymentTable)
        region = await in_view(pilot, t, width=size[0] - 2, height=5)
        assert sum(c.get_render_width(t) for c in t.columns.values()) <= region.width
        assert {"name", "status", "memory", "cost"} <= set(t.column_keys)
        assert t.get_cell("old", "cost").plain == "0.0055 USD + 0.0012 EUR"
        if size == LARGE:
            assert {"model", "hardware", "cpu"} <= set(t.column_keys)


@pytest.mark.parametrize("size", [SMALL, LARGE])
async def test_detail_fits(recorded, size) -> None:
    app = app_at(recorded.url)
    async with app.run_test(size=size) as pilot:
        await open_screen(pilot, None, DeploymentsScreen)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen)
                    and app.screen.dep is not None, 20, "the detail")
        screen = app.screen
        await in_view(pilot, screen.query_one("#title"), width=size[0])
        await in_view(pilot, screen.query_one("#facts"), width=30, height=6)
        for plot in screen.query(SeriesPlot):
            await in_view(pilot, plot, width=30, height=8)
        await in_view(pilot, screen.query_one("#billing"), width=30)
        await in_view(pilot, screen.query_one("#events"), width=30, height=3)
        await in_view(pilot, screen.query_one("#log-tail"), width=30, height=6)
        await footer_fits(pilot)


@pytest.mark.parametrize("size", [SMALL, LARGE])
async def test_new_deployment_fits(recorded, size) -> None:
    app = app_at(recorded.url)
    async with app.run_test(size=size) as pilot:
        await open_screen(pilot, "n", NewDeploymentScreen, lambda s: s.models is not None)
        screen = app.screen
        await in_view(pilot, screen.query_one("#name"), width=30, height=3)
        await in_view(pilot, screen.query_one("#tiers", OptionList), width=40, height=5)
        await in_view(pilot, screen.query_one("#models", OptionList), width=40, height=5)
        await in_view(pilot, screen.query_one("#choice"), width=40)
        await in_view(pilot, screen.query_one("#create"), width=6)
        await footer_fits(pilot)


@pytest.mark.parametrize("size", [SMALL, LARGE])
async def test_billing_fits(recorded, size) -> None:
    app = app_at(recorded.url)
    async with app.run_test(size=size) as pilot:
        await open_screen(pilot, "b", BillingScreen, lambda s: s.shown is not None)
        screen = app.screen
        for selector in ("#today", "#month", "#range"):
            await in_view(pilot, screen.query_one(selector), width=5)
        for selector in ("#since", "#until"):
            field = screen.query_one(selector, Input)
            await in_view(pilot, field)
            assert field.content_region.width > len(ISO_TIME), selector  # and the cursor
        for selector in ("#by-deployment", "#by-owner"):
            t = screen.query_one(selector, DataTable)
            region = await in_view(pilot, t, width=30, height=t.row_count + 1)
            assert sum(c.get_render_width(t) for c in t.columns.values()) <= region.width
        await footer_fits(pilot)


async def test_logs_fit(recorded) -> None:
    app = app_at(recorded.url)
    async with app.run_test(size=SMALL) as pilot:
        await open_screen(pilot, "l", LogsScreen, lambda s: s.log_offset is not None)
        await in_view(pilot, app.screen.query_one("#log"), width=78, height=18)
        await footer_fits(pilot)


def test_fit_columns_cuts_the_model_then_drops_columns() -> None:
    widths = {key: 10 for key, _ in COLUMNS} | {"model": 40}
    natural = sum(w + 2 for w in widths.values())  # 140
    assert dict(fit_columns(widths, natural)) == widths
    shrunk = dict(fit_columns(widths, natural - 20))
    assert shrunk["model"] == 20 and set(shrunk) == set(widths)
    narrow = fit_columns(widths, 80)
    assert sum(w + 2 for _, w in narrow) <= 80
    assert [k for k, _ in narrow][:1] == ["name"] and "status" in dict(narrow)
    assert "rate" not in dict(narrow)  # the first to go
    assert [k for k, _ in fit_columns(widths, 5)] == ["name", "status"]  # never fewer


async def test_columns_shrink_when_a_long_row_goes(recorded) -> None:
    app = app_at(recorded.url)
    long_name = "a-very-long-endpoint-name-that-goes-away"
    async with app.run_test(size=LARGE) as pilot:
        await until(pilot, lambda: len(names(pilot)) == 4, 20, "the rows")
        t = table(pilot)

        def name_width() -> int:
            return next(c.width for c in t.columns.values() if c.key.value == "name")

        before = name_width()
        rows = recorded.answers["/api/deployments"]["data"]
        recorded.answers["/api/deployments"] = {"data": [*rows, dict(rows[0],
                                                                     name=long_name)]}
        await until(pilot, lambda: long_name in names(pilot), 20, "the long row")
        assert name_width() == len(long_name) > before
        recorded.answers["/api/deployments"] = {"data": rows}
        await until(pilot, lambda: long_name not in names(pilot), 20, "the long row to go")
        assert name_width() == before


async def test_the_disconnected_line_is_whole_at_80_columns() -> None:
    """Port 9 refuses: the banner's long line wraps rather than being cut."""
    from tui.widgets.banner import ConnectionBanner

    app = BerthApp("http://127.0.0.1:9", "token", poll_s=0.2, clock=lambda: NOW)
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: app.screen.has_class("-disconnected"), 20, "disconnected")
        banner = app.screen.query_one(ConnectionBanner)
        await pilot.pause(0.1)
        whole = str(banner.visual)
        assert "cannot reach berth at http://127.0.0.1:9" in whole
        region = await in_view(pilot, banner, width=SMALL[0])
        shown = " ".join("".join(seg.text for seg in strip).strip()
                         for strip in banner.render_lines(region.reset_offset))
        assert " ".join(shown.split()) == " ".join(whole.split())
        assert region.height >= 2


def shown_text(widget: Widget, region: Region) -> list[str]:
    """What `widget` draws in `region` (its own region on the screen), line by line."""
    return ["".join(seg.text for seg in strip) for strip in
            widget.render_lines(region.reset_offset)]


@pytest.mark.parametrize("width", [80, 90, 100, 110, 130, 160])
async def test_billing_shows_money_whole(recorded, width) -> None:
    """The trial's 100x30: COST was cut to `0.00521` and Range to `R`. Money is shown
    whole with its currency at every width (the tables stack where they do not fit side
    by side), and every button its whole label."""
    cost = "0.005217529"  # nine places, like the server's amounts
    deps = recorded.answers["/api/billing"]

    def billing(request):
        answer = deps(request)
        answer = {**answer, "data": [dict(answer["data"][0], cost=cost),
                                     *answer["data"][1:]]}
        return answer

    recorded.answers["/api/billing"] = billing
    app = app_at(recorded.url)
    async with app.run_test(size=(width, 30)) as pilot:
        await open_screen(pilot, "b", BillingScreen, lambda s: s.shown is not None)
        screen = app.screen
        for selector, text in (("#today", "Today"), ("#month", "This month"),
                               ("#range", "Range")):
            button = screen.query_one(selector)
            region = await in_view(pilot, button, width=len(text))
            assert text in "".join(shown_text(button, region)), (selector, width)
        for selector in ("#by-deployment", "#by-owner"):
            t = screen.query_one(selector, DataTable)
            region = await in_view(pilot, t, width=30, height=t.row_count + 1)
            lines = shown_text(t, region)
            costs = [t.get_row_at(i)[2].plain for i in range(t.row_count)]
            assert all(c.endswith(" USD") for c in costs)
            for c in costs:  # each amount, whole, on its row as drawn
                assert any(c in line for line in lines), (c, lines)
        by_dep = screen.query_one("#by-deployment", DataTable)
        assert by_dep.get_row_at(0)[2].plain == f"{cost} USD"
        await footer_fits(pilot)
