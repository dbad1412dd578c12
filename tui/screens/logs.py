"""A deployment's engine log, followed as it grows (like `berth logs -f`)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Log, Static

from tui.api import LogChunk
from tui.polling import PollingScreen
from tui.widgets.banner import ConnectionBanner
from tui.widgets.keys import Keys

TAIL = 500


@dataclass(frozen=True)
class Chunk:
    log: LogChunk
    asked_from: int | None


class LogsScreen(PollingScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("e", "end", "Follow the end"),
    ]

    def __init__(self, name: str) -> None:
        super().__init__()
        self.dep_name = name
        self.log_offset: int | None = None
        self.following = True  # at the end and staying there; off once scrolled up

    def compose(self) -> ComposeResult:
        yield ConnectionBanner(self.berth.label)
        yield Static(Text(f"log of {self.dep_name} (the last {TAIL} lines, then as it grows)"),
                     id="title")
        yield Log(id="log", max_lines=20_000)
        yield Keys()

    def on_mount(self) -> None:
        self.query_one(Log).focus()

    async def fetch(self) -> Chunk:
        offset = self.log_offset
        if offset is None:
            return Chunk(await self.client.logs(self.dep_name, tail=TAIL), None)
        return Chunk(await self.client.logs(self.dep_name, offset=offset), offset)

    def show(self, data: Chunk) -> None:
        """Opens at the end and follows it as it grows; a user who scrolled up stays
        where they are (`e` follows again). The scroll to the end waits for the layout,
        so a first chunk that comes before it (or a horizontal scrollbar that appears
        with a long line) still leaves the last line in view."""
        log = self.query_one(Log)
        if log.line_count and not log.is_vertical_scroll_end:
            self.following = False  # scrolled up since the last chunk
        elif log.line_count:
            self.following = True  # scrolled back down to the end
        if data.asked_from is None or data.log.offset is None:
            log.clear()
        if data.log.lines:
            log.write_lines(data.log.lines, scroll_end=False)
            if self.following:
                log.scroll_end(animate=False)  # after the next refresh: the layout is known
        self.log_offset = data.log.offset

    def action_end(self) -> None:
        self.following = True
        self.query_one(Log).scroll_end(animate=False)
