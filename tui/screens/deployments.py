"""The main screen: every deployment, live, and the node's capacity and today's cost."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from tui import format as fmt
from tui.actions import confirm_delete, run_action, stop_or_start
from tui.api import Billing, Deployment, Hardware, Usage
from tui.client import gather
from tui.polling import PollingScreen
from tui.widgets.banner import ConnectionBanner
from tui.widgets.deployment_table import DeploymentTable, Row
from tui.widgets.keys import Keys
from tui.widgets.theme_text import status_text

RATE_WINDOW_S = 10  # requests/s is the mean over this many seconds


@dataclass(frozen=True)
class Snapshot:
    deployments: list[Deployment]
    hardware: Hardware
    usage: Usage
    today: Billing
    now: float


def today_start(now: float) -> datetime:
    """Midnight UTC: billing days are UTC days."""
    return datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def request_rates(usage: Usage) -> dict[str, float]:
    """Requests per second over the last RATE_WINDOW_S seconds of samples."""
    if not usage.points:
        return {}
    latest = max(p.t for p in usage.points)
    counts: dict[str, int] = defaultdict(int)
    for p in usage.points:
        if p.deployment is not None and p.t > latest - RATE_WINDOW_S:
            counts[p.deployment] += p.requests
    return {name: n / RATE_WINDOW_S for name, n in counts.items()}


class DeploymentsScreen(PollingScreen):
    BINDINGS = [
        Binding("n", "new", "New"),
        Binding("s", "stop_start", "Stop/start"),
        Binding("r", "restart", "Restart"),
        Binding("d", "delete", "Delete"),
        Binding("l", "logs", "Logs"),
        Binding("b", "billing", "Billing"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.deployments: dict[str, Deployment] = {}
        self.data: Snapshot | None = None

    def compose(self) -> ComposeResult:
        yield ConnectionBanner(self.berth.label)
        yield DeploymentTable(id="deployments")
        yield Static(id="empty")
        yield Static(id="summary")
        yield Keys()

    def on_mount(self) -> None:
        self.query_one("#empty", Static).display = False
        self.query_one(DeploymentTable).focus()
        self.set_interval(1.0, self.tick)

    def tick(self) -> None:
        """Between polls, the clock moves on: uptimes and backoff countdowns follow it."""
        if self.data is not None:
            self._show_rows(self.data, self.now())

    async def fetch(self) -> Snapshot:
        now = self.now()
        deps, hardware, usage, today = await gather(
            self.client.deployments(), self.client.hardware(),
            self.client.usage(since=now - RATE_WINDOW_S - 2, step=1),
            self.client.billing(since=today_start(now)))
        return Snapshot(deps, hardware, usage, today, now)

    def show(self, data: Snapshot) -> None:
        self.data = data
        self.deployments = {d.name: d for d in data.deployments}
        self._show_rows(data, data.now)
        empty = self.query_one("#empty", Static)
        empty.display = not data.deployments
        empty.update(Text("No deployments yet: press n to create one."))
        self.query_one("#summary", Static).update(self._summary(data))

    def _show_rows(self, data: Snapshot, now: float) -> None:
        rates = request_rates(data.usage)
        self.query_one(DeploymentTable).show(
            [self._row(d, rates.get(d.name), now) for d in data.deployments])

    def _row(self, d: Deployment, rps: float | None, now: float) -> Row:
        status = status_text(self.app, d.status, d.deleting)
        if d.status == "crashed" and (retry := fmt.retry_in(d.retry_at, now, short=True)):
            status.append(f", {retry}")
        return (d.name, [
            Text(d.name), Text(d.model or fmt.DASH), Text(d.hardware or fmt.DASH), status,
            Text(fmt.uptime(d.ready_at, d.status, now), justify="right"),
            Text(fmt.percent(d.cpu_percent), justify="right"),
            Text(fmt.used_of(d.memory_bytes, d.memory_limit_bytes), justify="right"),
            Text(fmt.rate(rps if rps is not None or d.pid is None else 0.0), justify="right"),
            Text(fmt.moneys(d.all_costs), justify="right"),
            Text(fmt.per_hour(d.rate_per_hour), justify="right"),
        ])

    def _summary(self, data: Snapshot) -> Text:
        cap, used, free = data.hardware.capacity, data.hardware.allocated, data.hardware.free
        parts = [
            f"CPU {fmt.cpus(used.cpus)} of {fmt.cpus(cap.cpus)} held, {fmt.cpus(free.cpus)} free",
            f"memory {fmt.size(used.memory_bytes)} of {fmt.size(cap.memory_bytes)} held, "
            f"{fmt.size(free.memory_bytes)} free",
        ]
        if cap.gpus:
            parts.append(f"GPU {used.gpus} of {cap.gpus} held, {free.gpus} free")
        # /api/billing counts every deployment billed today, deleted ones too: so it may
        # be more than the COST column's rows add up to, and it says so
        totals = data.today.total_by_currency()
        parts.append("today (UTC), all deployments incl. deleted: "
                     + (" + ".join(fmt.money(t.cost, t.currency) for t in totals)
                        or fmt.money(Decimal(0))))
        ready = sum(d.status == "ready" for d in data.deployments)
        parts.append(f"{ready}/{len(data.deployments)} ready")
        return Text("node: " + " · ".join(parts))

    # -- actions ---------------------------------------------------------------------

    def _selected(self) -> Deployment | None:
        name = self.query_one(DeploymentTable).selected_name
        dep = self.deployments.get(name) if name else None
        if dep is None:
            self.notify("no deployment selected", severity="warning", timeout=2, markup=False)
        return dep

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        name = event.row_key.value
        if name in self.deployments:
            from tui.screens.detail import DetailScreen

            self.app.push_screen(DetailScreen(name))

    def action_new(self) -> None:
        from tui.screens.new_deployment import NewDeploymentScreen

        self.app.push_screen(NewDeploymentScreen(set(self.deployments)))

    def action_billing(self) -> None:
        from tui.screens.billing import BillingScreen

        self.app.push_screen(BillingScreen())

    def action_logs(self) -> None:
        if (dep := self._selected()) is not None:
            from tui.screens.logs import LogsScreen

            self.app.push_screen(LogsScreen(dep.name))

    def action_stop_start(self) -> None:
        if (dep := self._selected()) is not None:
            stop_or_start(self, dep)

    def action_restart(self) -> None:
        if (dep := self._selected()) is not None:
            run_action(self, dep.name, "restart")

    def action_delete(self) -> None:
        if (dep := self._selected()) is not None:
            confirm_delete(self, dep)

