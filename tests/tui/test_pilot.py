"""The console driven with Pilot against a real `berth serve` (real engines, real store)."""

from __future__ import annotations

import pytest
from textual.widgets import Input, OptionList, Static

from tests.helpers import ADMIN_TOKEN
from tests.tui.conftest import CHAT_MODEL
from tests.tui.pilot_helpers import names, select, status_of, until
from tui.app import BerthApp
from tui.screens.confirm import ConfirmDelete, ConfirmStop
from tui.screens.deployments import DeploymentsScreen
from tui.screens.new_deployment import NewDeploymentScreen

SIZE = (140, 40)


def app_for(live) -> BerthApp:
    return BerthApp(live.url, ADMIN_TOKEN, poll_s=0.25)


def text_of(app: BerthApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).visual)


def delete_quietly(live, name: str) -> None:
    resp = live.http.delete(f"/api/deployments/{name}")
    assert resp.status_code in (200, 404), resp.text


async def test_table_shows_the_preloaded_deployment(live) -> None:
    app = app_for(live)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "chat" in names(pilot), 30, "the chat row")
        await until(pilot, lambda: status_of(pilot, "chat") == "ready", 120, "chat ready")
        row = app.query_one("#deployments").get_row("chat")
        assert [c.plain for c in row[:3]] == ["chat", CHAT_MODEL, "micro"]
        assert row[6].plain.endswith("/ 2.0 GiB")  # memory used / the micro tier's limit
        assert "USD" in row[8].plain and row[9].plain == "0.033/h"
        summary = text_of(app, "#summary")
        assert "of 16 held" in summary and "today (UTC)" in summary


async def test_bad_names_are_refused_inline(live) -> None:
    app = app_for(live)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "chat" in names(pilot), 30, "the chat row")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NewDeploymentScreen))
        form = app.screen
        error = form.query_one("#name-error", Static)
        for bad, says in (("Bad", "lowercase"), ("a_b", "'_'"), ("-ab", "start and end"),
                          ("x" * 64, "at most 63"), ("chat", "already exists")):
            form.query_one("#name", Input).value = ""
            await pilot.click("#name")
            await pilot.press(*bad)
            await until(pilot, lambda b=bad: form.query_one("#name", Input).value == b)
            assert error.has_class("-invalid"), bad
            assert says in str(error.visual), (bad, str(error.visual))
            await pilot.press("ctrl+s")  # refused before anything is sent
            assert "endpoint name" in text_of(app, "#form-error")
        form.query_one("#name", Input).value = ""
        await pilot.click("#name")
        await pilot.press(*"good-name-1")
        await until(pilot, lambda: not error.has_class("-invalid"))
    assert live.http.get("/api/deployments/good-name-1").status_code == 404


async def test_an_api_error_shows_in_the_form(live) -> None:
    """A model whose weights are not on the server: the API says no, the form says why."""
    app = app_for(live)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NewDeploymentScreen))
        form = app.screen
        await until(pilot, lambda: form.models is not None and form.tiers, 30, "the lists")
        await pilot.press(*"no-weights")
        models = form.query_one("#models", OptionList)
        ids = [m.id for m in form.models]
        models.highlighted = ids.index("microsoft/phi-2")  # absent here, too big for micro
        await pilot.press("ctrl+s")
        await until(pilot, lambda: text_of(app, "#form-error"), 30, "the API's error")
        assert text_of(app, "#form-error").startswith(("model", "hardware"))
        assert isinstance(app.screen, NewDeploymentScreen)  # no crash, still the form
    assert live.http.get("/api/deployments/no-weights").status_code == 404


async def test_the_form_creates_a_deployment_and_it_appears(live) -> None:
    app = app_for(live)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: "chat" in names(pilot), 30, "the chat row")
            await pilot.press("n")
            await until(pilot, lambda: isinstance(app.screen, NewDeploymentScreen))
            form = app.screen
            await until(pilot, lambda: form.models is not None and form.tiers, 30,
                        "the lists")
            await pilot.press(*"made-by-form")
            tiers = form.query_one("#tiers", OptionList)
            assert form.tier is not None and form.tier.name == "micro"
            assert tiers.get_option("a10").disabled  # no GPU on this node
            models = form.query_one("#models", OptionList)
            models.highlighted = [m.id for m in form.models].index(CHAT_MODEL)
            await pilot.press("ctrl+s")
            await until(pilot, lambda: form.created == "made-by-form", 30, "the 201")
            await until(pilot, lambda: "made-by-form is ready" in text_of(app, "#progress"),
                        120, "the new deployment coming up")
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, DeploymentsScreen))
            await until(pilot, lambda: "made-by-form" in names(pilot), 10, "the new row")
            assert status_of(pilot, "made-by-form") == "ready"
        dep = live.http.get("/api/deployments/made-by-form").json()
        assert (dep["model"], dep["hardware"]) == (CHAT_MODEL, "micro")
    finally:
        delete_quietly(live, "made-by-form")


async def test_delete_asks_and_then_removes_the_right_row(live) -> None:
    for name in ("doomed", "spared"):
        resp = live.http.post("/api/deployments", json={"name": name, "model": CHAT_MODEL,
                                                        "hardware": "micro"})
        assert resp.status_code == 201, resp.text
    app = app_for(live)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: {"doomed", "spared"} <= set(names(pilot)), 30,
                        "both rows")
            select(pilot, "doomed")
            await pilot.press("d")
            await until(pilot, lambda: isinstance(app.screen, ConfirmDelete))
            assert "doomed" in str(app.screen.query_one("#question", Static).visual)
            await pilot.press("n")  # no: nothing happens
            await until(pilot, lambda: isinstance(app.screen, DeploymentsScreen))
            assert live.http.get("/api/deployments/doomed").status_code == 200
            select(pilot, "doomed")
            await pilot.press("d")
            await until(pilot, lambda: isinstance(app.screen, ConfirmDelete))
            await pilot.press("y")
            await until(pilot, lambda: "doomed" not in names(pilot), 60, "the row to go")
            assert {"spared", "chat"} <= set(names(pilot))
        assert live.http.get("/api/deployments/doomed").status_code == 404
        assert live.http.get("/api/deployments/spared").status_code == 200
    finally:
        delete_quietly(live, "doomed")
        delete_quietly(live, "spared")


async def test_stop_and_start_change_the_status(live) -> None:
    live.wait_status("chat", "ready", 120)
    app = app_for(live)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: status_of(pilot, "chat") == "ready", 30, "chat ready")
        select(pilot, "chat")
        await pilot.press("s")  # a running one: asks first, naming it
        await until(pilot, lambda: isinstance(app.screen, ConfirmStop))
        assert "chat" in str(app.screen.query_one("#question", Static).visual)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, DeploymentsScreen))
        assert live.deployment("chat")["status"] == "ready"
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmStop))
        await pilot.press("y")
        await until(pilot, lambda: status_of(pilot, "chat") == "stopped", 60, "stopped")
        assert live.deployment("chat")["status"] == "stopped"
        select(pilot, "chat")
        await pilot.press("s")
        await until(pilot, lambda: status_of(pilot, "chat") in ("pending", "starting",
                                                                  "loading", "ready"), 30,
                    "starting")
        await until(pilot, lambda: status_of(pilot, "chat") == "ready", 120, "ready again")
    assert live.deployment("chat")["status"] == "ready"


@pytest.fixture(autouse=True)
def _chat_left_running(live):
    """A test that fails half-way must not leave `chat` stopped for the next one."""
    yield
    if live.deployment("chat")["status"] == "stopped":
        live.http.post("/api/deployments/chat/start")
