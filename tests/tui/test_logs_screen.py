"""The logs screen opens at the end of a long log and follows it as it grows, unless the
user scrolled up (recorded answers)."""

from __future__ import annotations

from textual.widgets import Log

from tests.tui.pilot_helpers import names, until
from tests.tui.recorded import NOW
from tui.app import BerthApp
from tui.screens.logs import TAIL, LogsScreen


def line(i: int) -> str:  # wider than the screen: a horizontal scrollbar comes too
    return f"2026-12-04 09:00:00,000 INFO [chat pid 4242] engines.text: request {i} " \
           "done in 41 ms, with a tail long enough to be wider than a terminal " + "x" * 40


def drawn(log: Log) -> str:
    return "\n".join("".join(seg.text for seg in strip)
                     for strip in log.render_lines(log.region.reset_offset))


async def test_logs_open_at_the_end_and_follow(recorded) -> None:
    written = [line(i) for i in range(TAIL)]
    new: list[str] = []

    def logs(request):
        if "offset" in request.query:
            lines, new[:] = list(new), []
            return {"name": "chat", "lines": lines, "offset": 4096 + len(written)}
        return {"name": "chat", "lines": written[-TAIL:], "offset": 4096}

    recorded.answers["/api/deployments/chat/logs"] = logs
    app = BerthApp(recorded.url, "token", poll_s=0.2, clock=lambda: NOW)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: len(names(pilot)) == 4, 20, "the rows")
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LogsScreen)
                    and app.screen.log_offset is not None, 20, "the log")
        log = app.screen.query_one(Log)
        await until(pilot, lambda: "request 499 done" in drawn(log), 20, "the last line")
        assert log.is_vertical_scroll_end and "request 0 done" not in drawn(log)

        new.append("the newest line")
        written.append(new[-1])
        await until(pilot, lambda: "the newest line" in drawn(log), 20, "a new line, followed")

        await pilot.press("home")  # the user scrolls up: new lines do not pull the view
        await pilot.pause(0.1)
        top = log.scroll_y
        new.append("while scrolled up")
        await until(pilot, lambda: log.line_count == TAIL + 2, 20, "the next line")
        await pilot.pause(0.3)
        assert log.scroll_y == top and "while scrolled up" not in drawn(log)

        await pilot.press("e")  # follow the end again
        await until(pilot, lambda: "while scrolled up" in drawn(log), 20, "the end")
