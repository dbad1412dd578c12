"""The billing screen asks the billing API for the period chosen (recorded answers)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from textual.widgets import Input, Static

from tests.tui.pilot_helpers import names, until
from tests.tui.recorded import BILLING, NOW
from tui.api import Billing
from tui.app import BerthApp
from tui.screens.billing import BillingScreen, billing_rows, parse_when

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
            == ["big-one", "chat", "embed", "old (deleted #2)", "old", "quick (deleted #3)",
                "TOTAL"]
        assert by_dep.get_row_at(6)[2].plain == "0.04725875 USD"  # exact: the rows' sum
        assert "h:mm:ss.mmm" in by_dep.columns["billed"].label.plain

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


def shown(report: Billing) -> list[tuple[str, str, str]]:
    return [(k.plain, b.plain, c.plain) for k, b, c in billing_rows(report)]


def ms_of(billed: str) -> int:
    h, m, s = billed.split(":")
    return round((int(h) * 3600 + int(m) * 60 + float(s)) * 1000)


def test_each_total_is_the_sum_of_the_rows_shown() -> None:
    for group in ("deployment", "owner"):
        rows = shown(Billing.from_json(BILLING[group]))
        *parts, total = rows
        assert total[0] == "TOTAL"
        assert sum(Decimal(c.split()[0]) for _, _, c in parts) == Decimal(
            total[2].split()[0])
        assert sum(ms_of(b) for _, b, _ in parts) == ms_of(total[1])
    # rows that round apart at 4 places: shown exactly, they still add up
    report = Billing.from_json({"data": [
        {"key": k, "billed_seconds": 30.6, "cost": "0.000050000", "currency": "USD"}
        for k in "abc"], "total": {"billed_seconds": 91.8, "cost": "0.000150000",
                                   "currency": "USD"}})
    assert shown(report) == [("a", "0:00:30.600", "0.00005 USD"),
                             ("b", "0:00:30.600", "0.00005 USD"),
                             ("c", "0:00:30.600", "0.00005 USD"),
                             ("TOTAL", "0:01:31.800", "0.00015 USD")]


def test_deleted_deployments_are_marked() -> None:
    """A name deleted and created again is two rows with the same key: the deleted one
    says so (and which one it was), like the CLI; rows without the fields read as live."""
    report = Billing.from_json({"data": [
        {"key": "quick", "billed_seconds": 60, "cost": "0.5", "currency": "USD",
         "deployment_id": 3, "deleted": True},
        {"key": "quick", "billed_seconds": 30, "cost": "0.25", "currency": "USD",
         "deployment_id": 9, "deleted": False},
        {"key": "gone", "billed_seconds": 1, "cost": "0", "currency": "USD",
         "deleted": True},
        {"key": "older-server", "billed_seconds": 1, "cost": "0", "currency": "USD"}]})
    assert [k for k, _, _ in shown(report)] == [
        "quick (deleted #3)", "quick", "gone (deleted)", "older-server", "TOTAL"]
    assert shown(Billing.from_json(BILLING["deployment"]))[3][0] == "old (deleted #2)"


MIXED = [{"key": "a", "billed_seconds": 10, "cost": "1.25", "currency": "USD"},
         {"key": "b", "billed_seconds": 20, "cost": "2.5", "currency": "EUR"},
         {"key": "c", "billed_seconds": 30, "cost": "0.75", "currency": "USD"}]


def test_one_total_per_currency_never_a_sum_across() -> None:
    for answer in (
        {"data": MIXED, "total": {"billed_seconds": 60, "cost": "4.5", "currency": "mixed"}},
        {"data": MIXED, "totals": [{"billed_seconds": 20, "cost": "2.5", "currency": "EUR"},
                                   {"billed_seconds": 40, "cost": "2.0", "currency": "USD"}]},
        {"data": MIXED, "totals": {"EUR": {"billed_seconds": 20, "cost": "2.5"},
                                   "USD": "2.0"}},
    ):
        rows = shown(Billing.from_json(answer))
        assert rows[3:] == [("TOTAL", "0:00:20.000", "2.50 EUR"),
                            ("TOTAL", "0:00:40.000", "2.00 USD")], answer


def test_server_totals_stand_in_where_rows_cannot_be_read() -> None:
    report = Billing.from_json({"data": [], "totals": [
        {"billed_seconds": 0, "cost": "0", "currency": "USD"}]})
    assert shown(report) == [("TOTAL", "0:00:00.000", "0.00 USD")]
    report = Billing.from_json({"data": [{"key": "x", "cost": "bad", "currency": "USD"}],
                                "total": {"billed_seconds": 5, "cost": "1.5",
                                          "currency": "USD"}})
    assert shown(report)[-1] == ("TOTAL", "0:00:05.000", "1.50 USD")


async def test_a_range_typed_from_the_keyboard(recorded) -> None:
    """`g` puts the cursor in since; enter goes on to until; enter there applies. While a
    date field has the focus, letters type (t and m are not Today and This month)."""
    app = BerthApp(recorded.url, "token", poll_s=0.2, clock=lambda: NOW)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: len(names(pilot)) == 4, 20, "the rows")
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, BillingScreen)
                    and app.screen.shown is not None, 20, "the tables")
        screen = app.screen
        since, until_field = screen.query_one("#since", Input), screen.query_one("#until",
                                                                               Input)
        assert "e.g." in str(since.placeholder) and "e.g." in str(until_field.placeholder)
        since.value = "old text"  # g selects what is there: typing replaces it
        await pilot.press("g")
        assert app.focused is since and screen.period == "today"
        await pilot.press(*"2026-11-01", "t", "m", "backspace", "backspace")
        assert since.value == "2026-11-01" and screen.period == "today"
        await pilot.press("enter")
        assert app.focused is until_field and screen.period == "today"
        await pilot.press(*"2026-11-30T12:00", "enter")
        await until(pilot, lambda: "2026-11-01" in label(screen), 20, "the range")
        assert "2026-11-30 12:00" in label(screen)
        mark = len(recorded.calls)
        await until(pilot, lambda: len(billing_queries(recorded, mark)) >= 2, 20, "a poll")
        for q in billing_queries(recorded, mark):
            assert float(q["since"]) == unix(2026, 11, 1)
            assert float(q["until"]) == unix(2026, 11, 30, 12)
        assert screen.query_one("#by-deployment").row_count == 7
        await pilot.press("t")  # the focus went back to the table: keys work again
        await until(pilot, lambda: "today" in label(screen), 20, "today")
        await pilot.press("g", "escape")  # escape leaves the field, not the screen
        assert app.screen is screen and not isinstance(app.focused, Input)
        await pilot.press("escape")
        assert app.screen is not screen
