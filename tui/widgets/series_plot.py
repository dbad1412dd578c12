"""A live line plot of one series over the last minutes (textual-plotext)."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import RenderResult
from textual.color import Color, ColorParseError
from textual_plotext import PlotextPlot

Point = tuple[float, float | None]  # (seconds before now, the value or None: no value)
Segment = list[tuple[float, float]]


def segments(points: Sequence[Point], max_gap_s: float) -> list[Segment]:
    """The runs of the series that have no gap: a line is drawn within a run, never
    across a gap. A gap is a point without a value, or neighbours further apart in time
    than `max_gap_s` (buckets missing, e.g. while the deployment was stopped)."""
    runs: list[Segment] = []
    run: Segment = []
    last_t: float | None = None
    for t, value in sorted(points, key=lambda p: p[0]):
        if value is None or (last_t is not None and t - last_t > max_gap_s):
            if run:
                runs.append(run)
            run = []
        if value is not None:
            run.append((t, value))
        last_t = t
    if run:
        runs.append(run)
    return runs


# Lines of a plot that are not its canvas: title, top border, bottom axis, x tick
# labels, x label (measured on plotext 5.3.2: a plot `h` high has `h - 5` canvas rows).
FRAME_ROWS = 5
TICK_INTERVALS = (4, 3, 5, 2, 6, 7)  # preferred: each divides the rows evenly


def y_ticks(top: float, rows: int) -> list[float]:
    """Values for y-axis labels on a plot from 0 to `top` drawn on `rows` canvas rows,
    each the exact value of the row it lands on (plotext puts the row r at
    `top * r / (rows - 1)`), so a label always names its row. Evenly spaced where the
    rows allow (0, 19.375, 38.75, 58.125, 77.5 on 5 or 9 rows); otherwise on the rows
    nearest to quarters, each still labelled with its own row's value."""
    if rows < 2 or top <= 0:
        return [0.0]
    last = rows - 1
    intervals = next((n for n in TICK_INTERVALS if last % n == 0), None)
    if intervals is not None:
        marks = [last * i // intervals for i in range(intervals + 1)]
    else:
        marks = sorted({round(last * i / 4) for i in range(5)})
    return [top * r / last for r in marks]


def tick_label(value: float, top: float) -> str:
    places = 2 if top < 10 else 1 if top < 100 else 0
    return f"{value:.{places}f}"


class SeriesPlot(PlotextPlot):
    """x: seconds before now (negative), y: the value; absent points are gaps in time."""

    def __init__(self, title: str, *, window_s: int, floor: float = 1.0, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.title = title
        self.window_s = window_s
        self.floor = floor  # the y axis goes at least this high: a flat 0 stays at the bottom
        self.segments: list[Segment] = []
        self.top = floor

    def on_mount(self) -> None:
        super().on_mount()
        self._draw()

    def show(self, points: Sequence[Point], *, step_s: float,
             title: str | None = None) -> None:
        """`points` one per bucket of `step_s` seconds; a bucket missing is a gap."""
        runs = segments(points, max_gap_s=step_s * 1.5)
        if runs == self.segments and (title is None or title == self.title):
            return
        self.segments = runs
        if title is not None:
            self.title = title
        self._draw()

    @property
    def points(self) -> list[tuple[float, float]]:
        return [p for run in self.segments for p in run]

    def _color(self) -> tuple[int, int, int] | str:
        """One colour for every run (plotext would give each plot call its own)."""
        try:
            return Color.parse(self.app.theme_variables.get("primary", "")).rgb
        except ColorParseError:
            return "blue+"

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.title if self.segments else f"{self.title} (no samples yet)")
        plt.xlim(-self.window_s, 0)
        self.top = max([y for _, y in self.points] + [self.floor]) * 1.15
        plt.ylim(0, self.top)
        plt.xlabel("seconds ago")
        color = self._color() if self.is_mounted else "blue+"
        for run in self.segments:
            plt.plot([x for x, _ in run], [y for _, y in run], marker="braille", color=color)
        self.refresh()

    def render(self) -> RenderResult:
        """The y labels depend on how many rows the plot has now (plotext's own drop
        some when rows are few, and the rest then name the wrong rows)."""
        values = y_ticks(self.top, self.size.height - FRAME_ROWS)
        self.plt.yticks(values, [tick_label(v, self.top) for v in values])
        return super().render()
