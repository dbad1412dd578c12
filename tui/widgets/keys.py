"""The footer of every screen: compact, without the command palette's key, so that
a screen's keys fit in 80 columns (the palette still opens with ctrl+p)."""

from __future__ import annotations

from textual.widgets import Footer


class Keys(Footer):
    def __init__(self, **kw: object) -> None:
        super().__init__(compact=True, show_command_palette=False, **kw)  # type: ignore[arg-type]
