"""Billing: billed time and cost per deployment and per owner, for today, this month or
a chosen range (UTC, like the billing API's days), with totals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal, ScrollableContainer, Vertical
from textual.widgets import Button, DataTable, Input, Label, Static

from tui import format as fmt
from tui.api import Billing, BillingRow
from tui.client import gather
from tui.polling import PollingScreen
from tui.screens.deployments import today_start
from tui.widgets.banner import ConnectionBanner
from tui.widgets.keys import Keys


def parse_when(text: str, *, end: bool = False) -> datetime:
    """`2026-12-03` (a whole day: its end when `end`), or an ISO time (UTC if no zone)."""
    text = text.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a date (2026-12-03) or a time "
                         "(2026-12-03T10:00)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if end and len(text) == 10:  # a bare date: up to its end
        parsed += timedelta(days=1)
    return parsed


def billing_rows(report: Billing) -> list[list[Text]]:
    """The table's rows, then a TOTAL row per currency. Money is shown exactly (as many
    places as the amounts have) and billed time to the millisecond, so each TOTAL is the
    sum of the rows above it as shown, to the last digit."""
    totals = report.total_by_currency()
    places = fmt.money_places([r.cost for r in report.rows] + [t.cost for t in totals])
    out = []
    for r in report.rows:
        out.append(_cells(r, places))
    for t in totals:
        out.append(_cells(t, places, bold=True))
    return out


def _cells(row: BillingRow, places: int, bold: bool = False) -> list[Text]:
    style = "bold" if bold else ""
    return [Text(row.label, style=style),
            Text(fmt.billed(row.billed_seconds), style=style, justify="right"),
            Text(fmt.money(row.cost, row.currency, places), style=style, justify="right")]


@dataclass(frozen=True)
class Report:
    by_deployment: Billing
    by_owner: Billing
    label: str
    choice: int  # which choice of period it answers


class BillingScreen(PollingScreen):
    poll_s = 2.0
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("t", "today", "Today"),
        Binding("m", "month", "This month"),
        Binding("g", "range", "Range"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.period = "today"
        self.since: datetime | None = None
        self.until: datetime | None = None
        self.shown: tuple[object, ...] | None = None
        self.choice = 0  # bumped at each change of period: older answers are dropped

    def compose(self) -> ComposeResult:
        yield ConnectionBanner(self.berth.label)
        with Container(id="period"):
            with Horizontal(id="quick"):
                yield Button("Today", id="today", compact=True)
                yield Button("This month", id="month", compact=True)
            with Horizontal(id="custom"):
                yield Input(placeholder="since 2026-12-01T00:00", id="since", compact=True)
                yield Input(placeholder="until (now)", id="until", compact=True)
                yield Button("Range", id="range", compact=True)
        yield Static(id="range-error")
        yield Static(id="period-label")
        with ScrollableContainer(id="billing-tables"):
            with Vertical():
                yield Label("per deployment")
                yield DataTable(id="by-deployment", cursor_type="row", zebra_stripes=True)
            with Vertical():
                yield Label("per owner")
                yield DataTable(id="by-owner", cursor_type="row", zebra_stripes=True)
        yield Keys()

    def on_mount(self) -> None:
        for table_id, key in (("#by-deployment", "DEPLOYMENT"), ("#by-owner", "OWNER")):
            table = self.query_one(table_id, DataTable)
            table.add_column(key, key="key")
            table.add_column(Text("BILLED h:mm:ss.mmm", justify="right"), key="billed")
            table.add_column(Text("COST", justify="right"), key="cost")
        self.query_one("#by-deployment", DataTable).focus()

    def _range(self) -> tuple[datetime | None, datetime | None, str]:
        now = datetime.fromtimestamp(self.now(), UTC)
        if self.period == "today":
            start = today_start(self.now())
            return start, None, f"today: since {fmt.clock(start)}"
        if self.period == "month":
            start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            return start, None, f"this month: since {fmt.clock(start)}"
        until = fmt.clock(self.until) if self.until else "now"
        since = fmt.clock(self.since) if self.since else "the beginning"
        return self.since, self.until, f"from {since} until {until}"

    async def fetch(self) -> Report:
        choice = self.choice
        since, until, label = self._range()
        by_dep, by_owner = await gather(
            self.client.billing(since=since, until=until, group_by="deployment"),
            self.client.billing(since=since, until=until, group_by="owner"))
        return Report(by_dep, by_owner, label, choice)

    def show(self, data: Report) -> None:
        if data.choice != self.choice:  # asked before the period changed
            return
        self.query_one("#period-label", Static).update(Text(data.label + " (UTC)"))
        key = (data.by_deployment, data.by_owner)
        if key == self.shown:
            return
        self.shown = key
        for table_id, report in (("#by-deployment", data.by_deployment),
                                 ("#by-owner", data.by_owner)):
            table = self.query_one(table_id, DataTable)
            row = table.cursor_row
            table.clear()
            for cells in billing_rows(report):
                table.add_row(*cells)
            table.move_cursor(row=min(row, table.row_count - 1))


    # -- choosing the period -----------------------------------------------------------

    @on(Button.Pressed, "#today")
    def action_today(self) -> None:
        self._set("today")

    @on(Button.Pressed, "#month")
    def action_month(self) -> None:
        self._set("month")

    @on(Button.Pressed, "#range")
    @on(Input.Submitted)
    def action_range(self) -> None:
        error = self.query_one("#range-error", Static)
        try:
            since_text = self.query_one("#since", Input).value
            until_text = self.query_one("#until", Input).value
            since = parse_when(since_text) if since_text.strip() else None
            until = parse_when(until_text, end=True) if until_text.strip() else None
        except ValueError as e:
            error.update(Text(str(e)))
            return
        if since and until and until <= since:
            error.update(Text("until must be after since"))
            return
        error.update(Text(""))
        self.since, self.until = since, until
        self._set("range")

    def _set(self, period: str) -> None:
        self.period = period
        self.shown = None
        self.choice += 1
        self.poll_now()
