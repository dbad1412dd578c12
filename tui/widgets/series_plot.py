"""A live line plot of one series over the last minutes (textual-plotext)."""

from __future__ import annotations

from collections.abc import Sequence

from textual_plotext import PlotextPlot


class SeriesPlot(PlotextPlot):
    """x: seconds before now (negative), y: the value; absent points are gaps in time."""

    def __init__(self, title: str, *, window_s: int, floor: float = 1.0, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.title = title
        self.window_s = window_s
        self.floor = floor  # the y axis goes at least this high: a flat 0 stays at the bottom
        self.points: tuple[tuple[float, float], ...] = ()

    def on_mount(self) -> None:
        super().on_mount()
        self._draw()

    def show(self, points: Sequence[tuple[float, float]], title: str | None = None) -> None:
        points = tuple(points)
        if points == self.points and (title is None or title == self.title):
            return
        self.points = points
        if title is not None:
            self.title = title
        self._draw()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.title if self.points else f"{self.title} (no samples yet)")
        plt.xlim(-self.window_s, 0)
        top = max([y for _, y in self.points] + [self.floor])
        plt.ylim(0, top * 1.15)
        plt.xlabel("seconds ago")
        if self.points:
            xs = [x for x, _ in self.points]
            ys = [y for _, y in self.points]
            plt.plot(xs, ys, marker="braille")
        self.refresh()
