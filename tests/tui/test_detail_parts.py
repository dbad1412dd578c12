"""The detail screen's parts: plots whose y-axis labels name the rows they sit on, evenly
spaced where the rows allow (the trial saw CPU rows labelled 0.0, 25.8, 38.8, 64.6,
77.5), and aligned recent events."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

from tui.widgets.series_plot import FRAME_ROWS, SeriesPlot, tick_label, y_ticks


def test_ticks_are_even_where_the_rows_allow() -> None:
    assert [tick_label(v, 77.5) for v in y_ticks(77.5, 5)] == [
        "0.0", "19.4", "38.8", "58.1", "77.5"]
    assert y_ticks(77.5, 9) == y_ticks(77.5, 5)  # 8 rows apart: quarters land on rows
    assert y_ticks(90.0, 7) == [0.0, 30.0, 60.0, 90.0]  # 6 rows: thirds
    assert y_ticks(10.0, 1) == [0.0] and y_ticks(10.0, 0) == [0.0]
    assert y_ticks(10.0, 2) == [0.0, 10.0]


@pytest.mark.parametrize("rows", range(2, 40))
def test_every_tick_is_on_a_row_of_its_own(rows: int) -> None:
    top = 77.5
    ticks = y_ticks(top, rows)
    marks = [v * (rows - 1) / top for v in ticks]
    assert all(abs(m - round(m)) < 1e-9 for m in marks)
    assert len({round(m) for m in marks}) == len(marks) >= min(rows, 3)
    assert ticks[0] == 0 and ticks[-1] == pytest.approx(top)
    labels = [tick_label(v, top) for v in ticks]
    assert len(set(labels)) == len(labels)


class PlotApp(App[None]):
    def __init__(self, height: int) -> None:
        super().__init__()
        self.height = height

    def compose(self) -> ComposeResult:
        plot = SeriesPlot("CPU %", window_s=600, floor=10.0)
        plot.styles.height = self.height
        yield plot


@pytest.mark.parametrize("height", [8, 10, 12, 13, 14, 17, 20])
async def test_drawn_labels_name_their_rows(height: int) -> None:
    """Drawn by plotext: each label's row is the row whose value it says."""
    app = PlotApp(height)
    async with app.run_test(size=(60, 30)) as pilot:
        plot = app.query_one(SeriesPlot)
        plot.show([(-600.0 + 5 * i, 67.4 * i / 119) for i in range(120)], step_s=5)
        await pilot.pause()
        lines = plot.render().plain.split("\n")  # type: ignore[union-attr]
        rows = height - FRAME_ROWS
        canvas = lines[2:2 + rows]  # under the title and the top border
        labelled = {rows - 1 - i: line.split("┤")[0].strip()
                    for i, line in enumerate(canvas) if "┤" in line}
        assert len(labelled) >= min(rows, 3), lines
        for row, label in labelled.items():
            assert label == tick_label(plot.top * row / (rows - 1), plot.top), (row, lines)


async def test_events_are_aligned_one_line_each() -> None:
    """The detail's recent events: columns line up, a long reason ends in "…"."""
    from datetime import UTC, datetime

    from rich.console import Console

    from tui.api import Event
    from tui.screens.detail import events_table

    at = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    events = [Event(at, "ready", "health ok", 1), Event(at, "crashed", "engine exited "
                                                        "with code -9 " + "x" * 80, 1),
              Event(None, None, None, None)]
    app = App[None]()
    async with app.run_test():
        console = Console(width=50, record=True, color_system=None)
        console.print(events_table(app, events))
    lines = console.export_text().rstrip("\n").split("\n")
    assert lines[0] == "recent events" and len(lines) == 2 + len(events)
    header, *rows = lines[1:]
    starts = {header.index("STATUS"), header.index("REASON")}
    for row, word in zip(rows, ("?", "crashed", "ready"), strict=True):  # latest first
        assert row.index(word) in starts and len(row) <= 50, row
    assert rows[1].rstrip().endswith("…") and "health ok" in rows[2]
