"""The billing screen asks the billing API for the period chosen (recorded answers)."""

from __future__ import annotations

from datetime import UTC, datetime

from textual.widgets import Input, Static

from tests.tui.pilot_helpers import names, until
from tests.tui.recorded import NOW
from tui.app import BerthApp
from tui.screens.billing import BillingScreen, parse_when

SIZE = (140, 40)


def unix(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def label(screen: BillingScreen) -> str:
    return str(screen.query_one("#period-label", Static).visual)


def billing_queries(recorded, after: int) -> list[dict[str, str]]:
    return [q for _, path, q in recorded.calls[after:] if path == "/api/billing"]


async def test_today_month_and_a_range(recorded) -> None:
    app = BerthApp(recorded.url, "token", poll_s=0.2, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(names(pilot)) == 4, 20, "the rows")
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, BillingScreen)
                    and app.screen.shown is not None, 20, "the tables")
        screen = app.screen
        mark = len(recorded.calls)
        await until(pilot, lambda: len(billing_queries(recorded, mark)) >= 2, 20, "a poll")
        groups = {q["group_by"] for q in billing_queries(recorded, mark)}
        assert groups == {"deployment", "owner"}
        assert all(float(q["since"]) == unix(2026, 12, 4) and "until" not in q
                   for q in billing_queries(recorded, mark))
        by_dep = screen.query_one("#by-deployment")
        assert [r[0].plain for r in (by_dep.get_row_at(i) for i in range(by_dep.row_count))] \
            == ["big-one", "chat", "embed", "old", "TOTAL"]
        assert by_dep.get_row_at(4)[2].plain == "0.043409 USD"

        await pilot.press("m")
        await until(pilot, lambda: "this month" in label(screen), 20, "this month")
        mark = len(recorded.calls)
        await until(pilot, lambda: billing_queries(recorded, mark), 20, "a month poll")
        assert float(billing_queries(recorded, mark)[0]["since"]) == unix(2026, 12, 1)

        screen.query_one("#since", Input).value = "yesterday"
        await pilot.click("#range")
        assert "not a date" in str(screen.query_one("#range-error", Static).visual)
        screen.query_one("#since", Input).value = "2026-11-01"
        screen.query_one("#until", Input).value = "2026-11-30"
        await pilot.click("#until")
        await pilot.press("enter")  # enter in a date applies the range, like the button
        await until(pilot, lambda: "2026-11-01" in label(screen), 20, "the range")
        mark = len(recorded.calls)
        await until(pilot, lambda: billing_queries(recorded, mark), 20, "a range poll")
        q = billing_queries(recorded, mark)[0]
        assert float(q["since"]) == unix(2026, 11, 1)
        assert float(q["until"]) == unix(2026, 12, 1)  # a bare date counts to its end


def test_parse_when() -> None:
    assert parse_when("2026-12-03T10:00").timestamp() == unix(2026, 12, 3, 10)
    assert parse_when("2026-12-03T10:00+01:00").timestamp() == unix(2026, 12, 3, 9)
    assert parse_when("2026-12-03", end=True).timestamp() == unix(2026, 12, 4)
