"""Nothing the server sends (or fails to send) ends the console."""

from __future__ import annotations

import copy

from textual.widgets import OptionList

from tests.helpers import ADMIN_TOKEN
from tests.tui.pilot_helpers import names, until
from tests.tui.recorded import DEPLOYMENTS, RecordedServer, default_answers
from tui.app import BerthApp
from tui.screens.deployments import DeploymentsScreen
from tui.screens.detail import DetailScreen
from tui.screens.new_deployment import NewDeploymentScreen
from tui.widgets.banner import ConnectionBanner

SIZE = (140, 40)


def banner_text(app: BerthApp) -> str:
    return str(app.screen.query_one(ConnectionBanner).visual)


async def test_a_server_that_goes_away_shows_disconnected_and_recovers(recorded) -> None:
    app = BerthApp(recorded.url, "token", poll_s=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(names(pilot)) == 4, 20, "the rows")
        recorded.stop()
        await until(pilot, lambda: "disconnected, retrying" in banner_text(app), 20,
                    "the disconnected banner")
        assert app.screen.has_class("-disconnected")
        assert len(names(pilot)) == 4  # the last known rows stay, dimmed
        recorded.start()  # the same port again
        await until(pilot, lambda: banner_text(app).endswith("connected"), 30,
                    "the console to reconnect")
        assert not app.screen.has_class("-disconnected")
        recorded.answers["/api/deployments"] = {"data": DEPLOYMENTS[:2]}
        await until(pilot, lambda: len(names(pilot)) == 2, 20, "fresh rows")


WEIRD_DEPLOYMENTS = [
    "<html><body>502 Bad Gateway</body></html>",  # not JSON at all
    [1, 2, 3],
    {"data": "nope"},
    {"data": [None, 5, "x", {"name": 7}, {"name": ""}]},
    {"data": [{"name": "[bold]markup[/]", "status": ["?"], "usage": "none",
               "billing": {"cost": "NaN", "rate_per_hour": "1e999999", "billed_seconds": -1},
               "ready_at": "yesterday", "created_at": 12, "pid": True, "restarts": 1e308}]},
    {"data": [{"name": "dup", "status": "ready"}, {"name": "dup", "status": "failed"}]},
    {"data": [{"name": "n" * 5000, "model": "\x1b[31mred\x1b[0m", "status": "ready",
               "ready_at": "9999-12-31T23:59:59Z",
               "usage": {"cpu_percent": 1e300, "memory_bytes": 2**70,
                         "memory_limit_bytes": -5}}]},
]

WEIRD_OTHERS = {
    "/api/hardware": {"tiers": [{"name": 3}, {"name": "x", "cpus": "many", "price_per_hour": 1},
                                "?"], "capacity": [], "free": None},
    "/api/usage": {"data": [{"t": "now"}, {"t": 1.5, "requests": "many"}, None], "step": 0},
    "/api/billing": {"data": [{"key": None, "cost": {"a": 1}}], "total": "all of it"},
    "/api/models": {"data": [{"id": "m1", "fits": "micro"}, {"id": ""}, 4]},
}


async def test_odd_answers_never_crash_the_console(recorded, caplog) -> None:
    app = BerthApp(recorded.url, "token", poll_s=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(names(pilot)) == 4, 20, "the rows")
        recorded.answers.update(copy.deepcopy(WEIRD_OTHERS))
        for answer in WEIRD_DEPLOYMENTS:
            recorded.answers["/api/deployments"] = answer
            before = len(recorded.calls)
            await until(pilot, lambda b=before: len(recorded.calls) > b + 8, 20, "some polls")
            assert isinstance(app.screen, DeploymentsScreen)
        assert names(pilot) == ["n" * 5000]
        # the other screens, on odd answers too
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NewDeploymentScreen)
                    and app.screen.models is not None, 20, "the form")
        assert [m.id for m in app.screen.models] == ["m1"]
        assert app.screen.query_one("#tiers", OptionList).option_count == 1  # "x"
        await pilot.press("escape")
        recorded.answers["/api/deployments/weird"] = {"name": "weird", "usage": [],
                                                      "billing": 3, "raw": {"a": [1, {}]}}
        recorded.answers["/api/deployments/weird/events"] = {"data": [{"at": 5}, 3]}
        recorded.answers["/api/deployments/weird/logs"] = {"lines": [1, "ok\x00line", None],
                                                          "offset": "end"}
        app.push_screen(DetailScreen("weird"))
        before = len(recorded.calls)
        await until(pilot, lambda: len(recorded.calls) > before + 12, 20, "some polls")
        assert isinstance(app.screen, DetailScreen) and app.screen.dep is not None
        recorded.answers.update(default_answers())
        await pilot.press("escape")
        await until(pilot, lambda: len(names(pilot)) == 4, 20, "good rows again")
    # every odd answer was read and shown: no "cannot read/show the answer" on the way
    assert [r.getMessage() for r in caplog.records if r.name.startswith("tui")] == []


async def test_a_wrong_token_says_so_in_the_banner(live) -> None:
    app = BerthApp(live.url, "not-the-token", poll_s=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "error:" in banner_text(app), 20, "the error banner")
        assert names(pilot) == []
    app = BerthApp(live.url, ADMIN_TOKEN, poll_s=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "chat" in names(pilot), 20, "the rows")
        assert banner_text(app).endswith("connected")


def test_recorded_server_is_a_real_http_server() -> None:
    """The snapshot tests' server answers over real HTTP (a sanity check of the fixture)."""
    import httpx

    server = RecordedServer().start()
    try:
        resp = httpx.get(server.url + "/api/deployments")
        assert resp.status_code == 200 and len(resp.json()["data"]) == 4
        assert httpx.get(server.url + "/api/nothing").json()["error"]["code"] == "not_found"
    finally:
        server.close()
