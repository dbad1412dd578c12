"""One deployment: its JSON facts, live plots, billing, recent events and log tail."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.widgets import Log, Static

from tui import format as fmt
from tui.actions import confirm_delete, run_action, stop_or_start
from tui.api import Deployment, Event, LogChunk, Usage
from tui.client import gather
from tui.polling import PollingScreen
from tui.widgets.banner import ConnectionBanner
from tui.widgets.keys import Keys
from tui.widgets.series_plot import SeriesPlot
from tui.widgets.theme_text import status_text

WINDOW_S = 600  # the plots show the last ten minutes
STEP_S = 5
LOG_TAIL = 40
EVENTS = 12


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """A JSON object as (dotted key, JSON value) pairs: `slice.cpu_quota  1.0`."""
    if isinstance(value, dict) and value:
        out = []
        for key, item in value.items():
            out += flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    return [(prefix, json.dumps(value, ensure_ascii=False, default=str))]


def facts(raw: dict[str, Any]) -> Text:
    pairs = flatten(raw)
    width = min(max((len(k) for k, _ in pairs), default=0), 28)
    text = Text(no_wrap=False)
    for key, value in pairs:
        text.append(f"{key:<{width}} ", style="bold")
        text.append(f"{value}\n")
    text.rstrip()
    return text


def events_table(app: App[object], events: list[Event]) -> RenderableType:
    """Recent events, the latest first, in aligned columns: when, status, reason. One
    line each: a reason too long for the pane ends in "…" (the full one is in the logs
    and in GET /api/deployments/NAME/events)."""
    table = Table(box=None, padding=(0, 1, 0, 0), show_header=True, header_style="bold",
                  expand=True)
    table.add_column("WHEN (UTC)", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("REASON", no_wrap=True, overflow="ellipsis", ratio=1, min_width=8)
    for e in reversed(events[-EVENTS:]):
        table.add_row(fmt.clock_short(e.at), status_text(app, e.status or "?"),
                      Text(e.reason or "", no_wrap=True, overflow="ellipsis"))
    title = Text("recent events", style="bold")
    return Group(title, table) if events else Group(title, Text("none yet"))


@dataclass(frozen=True)
class Detail:
    dep: Deployment
    events: list[Event]
    usage: Usage
    log: LogChunk
    log_from: int | None  # the offset the log chunk was asked from (None: a tail)
    now: float


class DetailScreen(PollingScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("s", "stop_start", "Stop/start"),
        Binding("r", "restart", "Restart"),
        Binding("d", "delete", "Delete"),
        Binding("l", "logs", "Logs"),
    ]

    def __init__(self, name: str) -> None:
        super().__init__()
        self.dep_name = name
        self.dep: Deployment | None = None
        self.log_offset: int | None = None

    def compose(self) -> ComposeResult:
        yield ConnectionBanner(self.berth.label)
        yield Static(Text(self.dep_name), id="title")
        with VerticalScroll(id="detail-main"):
            with Horizontal(id="detail-body"):
                with VerticalScroll(id="facts"):
                    yield Static(id="facts-json")
                with Grid(id="plots"):
                    yield SeriesPlot("CPU %", window_s=WINDOW_S, floor=10.0, id="plot-cpu")
                    yield SeriesPlot("memory MiB", window_s=WINDOW_S, id="plot-memory")
                    yield SeriesPlot("requests/s", window_s=WINDOW_S, id="plot-requests")
                    yield SeriesPlot("latency ms", window_s=WINDOW_S, id="plot-latency")
            with Horizontal(id="detail-bottom"):
                with Vertical(id="side"):
                    yield Static(id="billing")
                    yield Static(id="events")
                yield Log(id="log-tail", max_lines=500)
        yield Keys()

    async def fetch(self) -> Detail:
        now = self.now()
        offset = self.log_offset
        name = self.dep_name
        logs = (self.client.logs(name, tail=LOG_TAIL) if offset is None
                else self.client.logs(name, offset=offset))
        dep, events, usage, log = await gather(
            self.client.deployment(name), self.client.events(name, limit=EVENTS),
            self.client.usage(since=now - WINDOW_S, step=STEP_S, deployment=name), logs)
        return Detail(dep, events, usage, log, offset, now)

    def on_mount(self) -> None:
        self.set_interval(1.0, self.tick)

    def tick(self) -> None:
        """Between polls, a crashed deployment's countdown to its restart goes on."""
        if self.dep is not None:
            self._title(self.dep, self.now())

    def _title(self, dep: Deployment, now: float) -> None:
        title = Text.assemble(Text(dep.name, style="bold"), "  ",
                              status_text(self.app, dep.status, dep.deleting),
                              f"  {dep.model or fmt.DASH} on {dep.hardware or fmt.DASH}")
        why = [dep.reason] if dep.reason and dep.status != "ready" else []
        if dep.status == "crashed" and (retry := fmt.retry_in(dep.retry_at, now)):
            why.append(retry)
        if why:
            title.append(f"  ({'; '.join(why)})")
        self.query_one("#title", Static).update(title)

    def show(self, data: Detail) -> None:
        dep = self.dep = data.dep
        self._title(dep, data.now)
        self.query_one("#facts-json", Static).update(facts(dep.raw))
        self._plots(data)
        self.query_one("#billing", Static).update(Text(
            f"billed {fmt.billed(dep.billed_seconds)} · cost "
            f"{fmt.moneys(dep.all_costs, 6)} · rate {fmt.per_hour(dep.rate_per_hour)}"))
        self.query_one("#events", Static).update(events_table(self.app, data.events))
        self._log(data)

    def _plots(self, data: Detail) -> None:
        points = data.usage.points
        step = data.usage.step

        def series(values: list[tuple[float, float | None]]) -> list[tuple[float, float | None]]:
            return [(t - data.now, v) for t, v in values]

        self.query_one("#plot-cpu", SeriesPlot).show(
            series([(p.t, p.cpu_percent) for p in points]), step_s=step)
        limit = data.dep.memory_limit_bytes
        self.query_one("#plot-memory", SeriesPlot).show(
            series([(p.t, p.memory_bytes / fmt.MiB if p.memory_bytes is not None else None)
                    for p in points]), step_s=step,
            title=f"memory MiB (limit {fmt.size(limit)})" if limit else "memory MiB")
        self.query_one("#plot-requests", SeriesPlot).show(
            series([(p.t, p.requests / step) for p in points]), step_s=step)
        self.query_one("#plot-latency", SeriesPlot).show(
            series([(p.t, p.latency_ms_avg) for p in points]), step_s=step)

    def _log(self, data: Detail) -> None:
        log = self.query_one("#log-tail", Log)
        if data.log_from is None or data.log.offset is None:  # a fresh tail
            log.clear()
        if data.log.lines:
            log.write_lines(data.log.lines)
        self.log_offset = data.log.offset

    # -- actions ---------------------------------------------------------------------

    def action_stop_start(self) -> None:
        if self.dep is not None:
            stop_or_start(self, self.dep)

    def action_restart(self) -> None:
        run_action(self, self.dep_name, "restart")

    def action_delete(self) -> None:
        if self.dep is not None:
            confirm_delete(self, self.dep, then=self._deleted)

    def _deleted(self) -> None:
        """Back to the table once the deployment is gone (unless the person moved on)."""
        if self.is_current:
            self.dismiss()

    def action_logs(self) -> None:
        from tui.screens.logs import LogsScreen

        self.app.push_screen(LogsScreen(self.dep_name))
