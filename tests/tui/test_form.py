"""The new-deployment form: an API error goes once its inputs change; an invalid name
is said, never "will create" it (recorded answers; the create call answers 400)."""

from __future__ import annotations

from aiohttp import web
from textual.widgets import Input, OptionList, Static

from tests.tui.pilot_helpers import names, until
from tests.tui.recorded import NOW
from tui.app import BerthApp
from tui.screens.new_deployment import NewDeploymentScreen

SIZE = (140, 40)


def text(app: BerthApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).visual)


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
        await until(pilot, lambda: len(names(pilot)) == 4, 20, "the rows")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NewDeploymentScreen)
                    and app.screen.models is not None, 20, "the form")
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
        await until(pilot, lambda: len(names(pilot)) == 4, 20, "the rows")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NewDeploymentScreen)
                    and app.screen.models is not None, 20, "the form")
        assert "will create" not in text(app, "#choice")  # no name yet
        await pilot.press(*"Bad_Name")
        await until(pilot, lambda: app.screen.query_one("#name", Input).value == "Bad_Name")
        choice = text(app, "#choice")
        assert "will create" not in choice
        assert "cannot create 'Bad_Name'" in choice and "'_'" in choice
        app.screen.query_one("#name", Input).value = "good-name"
        await until(pilot, lambda: "will create good-name" in text(app, "#choice"), 3, "ok")
