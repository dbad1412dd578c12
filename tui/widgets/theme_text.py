"""Rich text coloured from the app's theme variables (so a theme change recolours it)."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.app import App
from textual.color import Color, ColorParseError

from tui.format import STATUS_STYLE


def themed(app: App[object], text: str, variable: str, bold: bool = False) -> Text:
    raw = app.theme_variables.get(variable)
    try:
        color = Color.parse(raw).rich_color if raw else None
    except ColorParseError:
        color = None
    return Text(text, style=Style(color=color, bold=bold))


def status_text(app: App[object], status: str, deleting: bool = False) -> Text:
    if deleting:
        return themed(app, "deleting", "text-warning")
    return themed(app, status, STATUS_STYLE.get(status, "foreground"))
