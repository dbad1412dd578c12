"""Billing: billed time and cost per deployment and per owner, for today, this month or
a chosen range (UTC, like the billing API's days), with totals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rich.text import Text
from textual import events, on
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


HEADERS = ("BILLED h:mm:ss.mmm", "COST")
LEAST_KEY = 8  # a key column may be cut (with …) to this many cells; money never is
PANE_PADDING = 2  # each table's pane: one cell either side


def column_widths(key: str, rows: list[list[Text]]) -> list[int]:
    """Each column's natural width: its widest cell or its label."""
    widths = [len(key), *(len(h) for h in HEADERS)]
    for row in rows:
        widths = [max(w, cell.cell_len) for w, cell in zip(widths, row, strict=True)]
    return widths


def table_width(widths: list[int], padding: int = 1) -> int:
    return sum(w + 2 * padding for w in widths)


@dataclass(frozen=True)
class Report:
    by_deployment: Billing
    by_owner: Billing
    label: str
    choice: int  # which choice of period it answers


class BillingScreen(PollingScreen):
    poll_s = 2.0
    BINDINGS = [
        Binding("escape", "back", "Back"),
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
        # per table: its key column's label and its rows (cells as the server's data
        # gives them, before any key is cut to fit)
        self.rows: dict[str, tuple[str, list[list[Text]]]] = {
            "#by-deployment": ("DEPLOYMENT", []), "#by-owner": ("OWNER", [])}
        self.layout_shown: tuple[object, ...] | None = None

    def compose(self) -> ComposeResult:
        yield ConnectionBanner(self.berth.label)
        with Container(id="period"):
            with Horizontal(id="quick"):
                yield Button("Today", id="today", compact=True)
                yield Button("This month", id="month", compact=True)
            with Horizontal(id="custom"):
                yield Input(placeholder="since: e.g. 2026-12-01", id="since", compact=True)
                yield Input(placeholder="until: e.g. 2026-12-31", id="until", compact=True,
                            tooltip="empty: until now; a bare date counts to its end")
                yield Button("Range", id="range", compact=True)
        yield Static(id="range-error")
        yield Static(id="period-label")
        with ScrollableContainer(id="billing-tables"):
            with Vertical(id="by-deployment-pane"):
                yield Label("per deployment")
                yield DataTable(id="by-deployment", cursor_type="row", zebra_stripes=True)
            with Vertical(id="by-owner-pane"):
                yield Label("per owner")
                yield DataTable(id="by-owner", cursor_type="row", zebra_stripes=True)
        yield Keys()

    def on_mount(self) -> None:
        self._arrange()
        self.query_one("#by-deployment", DataTable).focus()

    def on_resize(self, event: events.Resize) -> None:
        self._arrange()

    # -- the tables: side by side where both fit whole, else one above the other --------

    def _arrange(self, refill: bool = False) -> None:
        """Side by side when both tables fit whole; else stacked, each the full width,
        its key column cut (with …) if it must be. Money and billed times are never cut."""
        available = self.size.width - 1  # a cell for a vertical scrollbar's edge
        natural = {tid: column_widths(key, rows) for tid, (key, rows) in self.rows.items()}
        side_by_side = sum(table_width(w) + PANE_PADDING for w in natural.values()) \
            <= available
        layout: dict[str, list[int]] = {}
        for tid, widths in natural.items():
            room = available - PANE_PADDING - 1  # and the table's own scrollbar
            excess = table_width(widths) - room
            if not side_by_side and excess > 0 and available > 0:
                widths = [max(LEAST_KEY, widths[0] - excess), *widths[1:]]
            layout[tid] = widths
        key = (side_by_side, tuple(tuple(w) for w in layout.values()))
        if key == self.layout_shown and not refill:
            return
        self.layout_shown = key
        panes = self.query_one("#billing-tables")
        panes.set_class(not side_by_side, "-stacked")
        first = self.query_one("#by-deployment-pane")
        first.styles.width = (table_width(layout["#by-deployment"]) + PANE_PADDING
                              if side_by_side else None)
        for tid, widths in layout.items():
            self._fill(tid, widths)

    def _fill(self, table_id: str, widths: list[int]) -> None:
        label, rows = self.rows[table_id]
        table = self.query_one(table_id, DataTable)
        row = table.cursor_row
        table.clear(columns=True)
        table.add_column(label, key="key", width=widths[0])
        table.add_column(Text(HEADERS[0], justify="right"), key="billed", width=widths[1])
        table.add_column(Text(HEADERS[1], justify="right"), key="cost", width=widths[2])
        for cells in rows:
            first = cells[0]
            if first.cell_len > widths[0]:
                first = first.copy()
                first.truncate(widths[0], overflow="ellipsis")
            table.add_row(first, *cells[1:])
        if table.row_count:
            table.move_cursor(row=min(max(row, 0), table.row_count - 1))

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
            self.rows[table_id] = (self.rows[table_id][0], billing_rows(report))
        self._arrange(refill=True)

    # -- choosing the period -----------------------------------------------------------

    @on(Button.Pressed, "#today")
    def action_today(self) -> None:
        self._set("today")

    @on(Button.Pressed, "#month")
    def action_month(self) -> None:
        self._set("month")

    def action_range(self) -> None:
        """`g`: type the range: since, enter, until, enter (the Range button applies too)."""
        since = self.query_one("#since", Input)
        since.focus()
        since.select_all()

    def action_back(self) -> None:
        """escape: out of a date field back to the table; else back to the list."""
        if isinstance(self.focused, Input):
            self.query_one("#by-deployment", DataTable).focus()
        else:
            self.app.pop_screen()

    @on(Input.Submitted, "#since")
    def since_entered(self) -> None:
        until = self.query_one("#until", Input)
        until.focus()
        until.select_all()

    @on(Button.Pressed, "#range")
    @on(Input.Submitted, "#until")
    def apply_range(self) -> None:
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
        self.query_one("#by-deployment", DataTable).focus()  # t, m and g work again
        self._set("range")

    def _set(self, period: str) -> None:
        self.period = period
        self.shown = None
        self.choice += 1
        self.poll_now()
