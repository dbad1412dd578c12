"""The top line of every screen: which server, and whether it answers."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class ConnectionBanner(Static):
    """`berth · URL · connected`, or `disconnected, retrying in 2 s: why` in the error colour."""

    def __init__(self, label: str, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.label = label
        self.connected: bool | None = None

    def on_mount(self) -> None:
        self.update(Text(f"berth · {self.label} · connecting..."))

    def set_connected(self, extra: str = "") -> None:
        self.connected = True
        self.remove_class("-down")
        self.update(Text(f"berth · {self.label} · connected" + (f" · {extra}" if extra else "")))

    def set_error(self, message: str) -> None:
        """Connected, but the server refused what we asked (a 401, a 404...)."""
        self.connected = None
        self.add_class("-down")
        self.update(Text(f"berth · {self.label} · error: {message}"))

    def set_down(self, message: str, retry_s: float) -> None:
        self.connected = False
        self.add_class("-down")
        self.update(Text(f"berth · {self.label} · disconnected, retrying in {retry_s:g} s: "
                         f"{message}"))
