"""The new-deployment form: an API error goes once its inputs change; an invalid name
is said, never "will create" it (recorded answers; the create call answers 400)."""

from __future__ import annotations

import pytest
from aiohttp import web
from textual.pilot import Pilot
from textual.widgets import Input, OptionList, Static

from tests.tui.pilot_helpers import names, until
from tests.tui.recorded import NOW
from tui.app import BerthApp
from tui.screens.new_deployment import NewDeploymentScreen

SIZE = (140, 40)


def text(app: BerthApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).visual)



async def open_form(pilot: Pilot[None]) -> None:
    """From the deployments screen, once its rows are in, to a loaded new-deployment form."""
    await until(pilot, lambda: len(names(pilot)) == 4, 20, "the rows")
    await pilot.press("n")
    await until(pilot, lambda: isinstance(pilot.app.screen, NewDeploymentScreen)
                and pilot.app.screen.models is not None, 20, "the form")

async def test_a_stale_api_error_goes_when_the_tier_changes(recorded) -> None:
    listing = recorded.answers["/api/deployments"]

    def deployments(request: web.Request):
        if request.method == "POST":
            return web.json_response({"error": {
                "message": "the node has no room for medium", "type": "invalid_request_error",
                "code": "no_capacity", "param": "hardware"}}, status=409)
        return listing

    recorded.answers["/api/deployments"] = deployments
    app = BerthApp(recorded.url, "token", poll_s=0.2, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(pilot)
        await pilot.press(*"new-one")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "no room" in text(app, "#form-error"), 20, "the error")
        app.screen.query_one("#tiers", OptionList).highlighted = 1  # another tier
        await until(pilot, lambda: text(app, "#form-error") == "", 3, "the error to go")
        assert "will create new-one" in text(app, "#choice")
        await pilot.press("ctrl+s")  # the same error again: then a name change clears it
        await until(pilot, lambda: "no room" in text(app, "#form-error"), 20, "the error")
        await pilot.press("x")
        await until(pilot, lambda: text(app, "#form-error") == "", 3, "the error to go")


async def test_an_invalid_name_is_never_going_to_be_created(recorded) -> None:
    app = BerthApp(recorded.url, "token", poll_s=0.2, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(pilot)
        assert "will create" not in text(app, "#choice")  # no name yet
        await pilot.press(*"Bad_Name")
        await until(pilot, lambda: app.screen.query_one("#name", Input).value == "Bad_Name")
        choice = text(app, "#choice")
        assert "will create" not in choice
        assert "cannot create 'Bad_Name'" in choice and "'_'" in choice
        app.screen.query_one("#name", Input).value = "good-name"
        await until(pilot, lambda: "will create good-name" in text(app, "#choice"), 3, "ok")


def created_answers(recorded) -> None:
    """POST /api/deployments answers 201; the new one then comes up: pending, loading,
    ready."""
    listing = recorded.answers["/api/deployments"]
    base = dict(listing["data"][0], name="made", status="pending", reason="created")
    states = iter([("pending", "created"), ("loading", "loading model"),
                   ("ready", "health ok")])
    current: dict[str, object] = {}

    def deployments(request: web.Request):
        if request.method == "POST":
            current["dep"] = base
            return web.json_response(base, status=201)
        return {"data": [*listing["data"], *current.values()]}

    def made(request: web.Request):
        status, reason = next(states, ("ready", "health ok"))
        current["dep"] = dict(base, status=status, reason=reason)
        return current["dep"]

    recorded.answers["/api/deployments"] = deployments
    recorded.answers["/api/deployments/made"] = made


def on_screen(app: BerthApp, selector: str) -> bool:
    """All of the widget is drawn inside the screen (not scrolled out of view)."""
    screen = app.screen
    widget = screen.query_one(selector)
    geometry = screen.find_widget(widget)
    return (screen.region.contains_region(geometry.region)
            and geometry.region.intersection(geometry.clip) == geometry.region)


async def test_after_create_at_80x24_the_progress_is_in_view(recorded) -> None:
    created_answers(recorded)
    app = BerthApp(recorded.url, "token", poll_s=0.2, clock=lambda: NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_form(pilot)
        form = app.screen
        await pilot.press(*"made")
        assert not on_screen(app, "#progress")  # below the lists, out of sight
        await pilot.press("ctrl+s")
        await until(pilot, lambda: form.created == "made", 10, "the 201")
        await until(pilot, lambda: "made is ready" in text(app, "#progress"), 20, "ready")
        await pilot.pause(0.2)
        assert on_screen(app, "#progress"), text(app, "#progress")
        # the name is taken now, by the new deployment: no "good name", no "will create"
        assert "good name" not in text(app, "#name-error")
        assert "created" in text(app, "#name-error")
        assert "will create" not in text(app, "#choice")
        assert text(app, "#choice").startswith("created made: ")
        await pilot.press("ctrl+s")  # a second create is refused, and said where seen
        await until(pilot, lambda: "already created" in text(app, "#form-error"), 3, "no")
        await pilot.pause(0.1)
        assert on_screen(app, "#form-error")
    assert [c for c in recorded.calls if c[0] == "POST"] == [
        ("POST", "/api/deployments", {})]


async def test_tiers_say_why_they_cannot_be_chosen(recorded) -> None:
    """The node (8 CPU, 24 GiB, no GPU; 4 CPU, 8 GiB free): `large` fits it but not
    now; `a10` needs a GPU it will never have."""
    app = BerthApp(recorded.url, "token", poll_s=0.2, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(pilot)
        tiers = app.screen.query_one("#tiers", OptionList)
        lines = {o.id: str(o.prompt) for o in (tiers.get_option_at_index(i)
                                               for i in range(tiers.option_count))}
        assert lines["large"].endswith("  4 CPU, 8 GiB free")
        assert lines["a10"].endswith("  never fits this node")
        assert "free" not in lines["micro"] and "never" not in lines["micro"]


async def test_the_choice_is_marked_when_its_list_has_no_focus(recorded) -> None:
    app = BerthApp(recorded.url, "token", poll_s=0.2, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(pilot)
        assert app.focused is app.screen.query_one("#name", Input)
        for selector in ("#tiers", "#models"):
            box = app.screen.query_one(selector, OptionList)
            plain = box.get_visual_style("option-list--option")
            marked = box.get_visual_style("option-list--option-highlighted")
            assert marked.background != plain.background and marked.bold, selector
            assert marked.background is not None and marked.background.a > 0.2, selector


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (150, 42)])
async def test_each_tier_and_model_is_one_line(recorded, size) -> None:
    app = BerthApp(recorded.url, "token", poll_s=0.2, clock=lambda: NOW)
    async with app.run_test(size=size) as pilot:
        await open_form(pilot)
        await pilot.pause(0.1)
        for selector in ("#tiers", "#models"):
            box = app.screen.query_one(selector, OptionList)
            assert box.virtual_size.height == box.option_count, (selector, size)
