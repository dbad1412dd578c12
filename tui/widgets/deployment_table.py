"""The deployments table: updated in place, so the cursor and the scroll stay put."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

COLUMNS = (("name", "NAME"), ("model", "MODEL"), ("hardware", "HARDWARE"),
           ("status", "STATUS"), ("uptime", "UPTIME"), ("cpu", "CPU %"),
           ("memory", "MEMORY / LIMIT"), ("rps", "REQ/S"), ("cost", "COST"),
           ("rate", "RATE"))

Row = tuple[str, Sequence[Text]]  # (deployment name, one cell per column)


class DeploymentTable(DataTable[Text]):
    BINDINGS = [Binding("enter", "select_cursor", "Details")]

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    @property
    def selected_name(self) -> str | None:
        if self.row_count == 0 or not self.is_valid_row_index(self.cursor_row):
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return key.value

    def show(self, rows: Sequence[Row]) -> None:
        """Make the table hold exactly `rows`, in that order, changing only what changed.

        The cursor stays on the deployment it was on; where that one is gone, on the row
        that took its place (or the last row)."""
        selected, index = self.selected_name, self.cursor_row
        wanted = {name for name, _ in rows}
        for key in [k for k in self.rows if k.value not in wanted]:
            self.remove_row(key)
        for name, cells in rows:
            if RowKey(name) in self.rows:
                for (column, _), cell in zip(COLUMNS, cells, strict=True):
                    if self.get_cell(name, column) != cell:
                        self.update_cell(name, column, cell, update_width=True)
            else:
                self.add_row(*cells, key=name)
        order = {name: i for i, (name, _) in enumerate(rows)}
        if [k.value for k in self._row_order()] != [name for name, _ in rows]:
            self.sort("name", key=lambda cell: order.get(cell.plain, len(order)))
        if self.row_count == 0:
            return
        if selected is not None and RowKey(selected) in self.rows:
            target = self.get_row_index(selected)
        else:
            target = min(max(index, 0), self.row_count - 1)
        if target != self.cursor_row:
            self.move_cursor(row=target, animate=False)

    def _row_order(self) -> list[RowKey]:
        return [row.key for row in self.ordered_rows]
