"""The deployments table: updated in place, so the cursor and the scroll stay put.

Its columns fit its width: each column is as wide as its widest cell (recomputed
whenever the rows change, so a long name that goes takes its width with it); where
that is wider than the table, the model's column is cut short (with "…"), then the
least needed columns are left out (the detail screen shows everything).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

COLUMNS = (("name", "NAME"), ("model", "MODEL"), ("hardware", "HARDWARE"),
           ("status", "STATUS"), ("uptime", "UPTIME"), ("cpu", "CPU %"),
           ("memory", "MEMORY / LIMIT"), ("rps", "REQ/S"), ("cost", "COST"),
           ("rate", "RATE"))
RIGHT = {"uptime", "cpu", "memory", "rps", "cost", "rate"}
DROP_ORDER = ("rate", "rps", "uptime", "hardware", "cpu", "model", "memory", "cost")
SHRINK = {"model": 16}  # may be cut down to this many cells before a column is dropped

Row = tuple[str, Sequence[Text]]  # (deployment name, one cell per column)
Layout = tuple[tuple[str, int], ...]  # (column key, content width) of the shown columns


def fit_columns(widths: dict[str, int], available: int, padding: int = 1) -> Layout:
    """Which columns to show, how wide, so that they fit in `available` cells.

    `widths`: each column's natural width (its widest cell or label). Name and status
    always stay, even where they alone do not fit (the table then scrolls)."""
    for dropped in range(len(DROP_ORDER) + 1):
        shown = {k: w for k, w in widths.items() if k not in DROP_ORDER[:dropped]}
        excess = sum(w + 2 * padding for w in shown.values()) - available
        if excess <= 0:
            return tuple(shown.items())
        for key, least in SHRINK.items():
            if key in shown and shown[key] - excess >= least:
                shown[key] -= excess
                return tuple(shown.items())
    return tuple(shown.items())


class DeploymentTable(DataTable[Text]):
    BINDINGS = [Binding("enter", "select_cursor", "Details")]

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.cells: dict[str, list[Text]] = {}  # every column's cell, in row order
        self.layout_shown: Layout = ()

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self._relayout()

    def on_resize(self, event: events.Resize) -> None:
        self._relayout()

    @property
    def selected_name(self) -> str | None:
        if self.row_count == 0 or not self.is_valid_row_index(self.cursor_row):
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return key.value

    @property
    def column_keys(self) -> list[str]:
        return [key for key, _ in self.layout_shown]

    def show(self, rows: Sequence[Row]) -> None:
        """Make the table hold exactly `rows`, in that order, changing only what changed.

        The cursor stays on the deployment it was on; where that one is gone, on the row
        that took its place (or the last row)."""
        selected, index = self.selected_name, self.cursor_row
        self.cells = {name: list(cells) for name, cells in rows}
        if not self._relayout(selected, index):  # same columns and widths: change cells in place
            widths = dict(self.layout_shown)
            for key in [k for k in self.rows if k.value not in self.cells]:
                self.remove_row(key)
            for name, cells in self.cells.items():
                shown = self._shown_cells(cells, widths)
                if RowKey(name) in self.rows:
                    for column, cell in zip(self.column_keys, shown, strict=True):
                        if self.get_cell(name, column) != cell:
                            self.update_cell(name, column, cell)
                else:
                    self.add_row(*shown, key=name)
            order = {name: i for i, name in enumerate(self.cells)}
            if [k.value for k in self._row_order()] != list(self.cells):
                self.sort("name", key=lambda cell: order.get(cell.plain, len(order)))
        self._restore_cursor(selected, index)

    def _restore_cursor(self, selected: str | None, index: int) -> None:
        if self.row_count == 0:
            return
        if selected is not None and RowKey(selected) in self.rows:
            target = self.get_row_index(selected)
        else:
            target = min(max(index, 0), self.row_count - 1)
        if target != self.cursor_row:
            self.move_cursor(row=target, animate=False)

    def _natural_widths(self) -> dict[str, int]:
        widths = {key: len(label) for key, label in COLUMNS}
        for cells in self.cells.values():
            for (key, _), cell in zip(COLUMNS, cells, strict=True):
                widths[key] = max(widths[key], cell.cell_len)
        return widths

    def _relayout(self, selected: str | None = None, index: int | None = None) -> bool:
        """Rebuild the columns (and so the rows) when the columns that fit, or their
        widths, changed; True if it did. A rebuild (a resize, a column refit) leaves the
        cursor on the deployment it was on (`selected`, by default the one under the
        cursor now), never on the first row: `s`, `r` and `d` act on the cursor's row."""
        if index is None:
            selected, index = self.selected_name, self.cursor_row
        available = self.size.width - self.styles.scrollbar_size_vertical
        widths = self._natural_widths()
        layout = (fit_columns(widths, available, self.cell_padding) if available > 0
                  else tuple(widths.items()))
        if layout == self.layout_shown and self.columns:
            return False
        self.layout_shown = layout
        self.clear(columns=True)
        labels = dict(COLUMNS)
        for key, width in layout:
            label = Text(labels[key], justify="right" if key in RIGHT else "left")
            self.add_column(label, width=width, key=key)
        shown = dict(layout)
        for name, cells in self.cells.items():
            self.add_row(*self._shown_cells(cells, shown), key=name)
        self._restore_cursor(selected, index)
        return True

    @staticmethod
    def _shown_cells(cells: Sequence[Text], widths: dict[str, int]) -> list[Text]:
        out = []
        for (key, _), cell in zip(COLUMNS, cells, strict=True):
            if key not in widths:
                continue
            if cell.cell_len > widths[key]:
                cell = cell.copy()
                cell.truncate(widths[key], overflow="ellipsis")
            out.append(cell)
        return out

    def _row_order(self) -> list[RowKey]:
        return [row.key for row in self.ordered_rows]
