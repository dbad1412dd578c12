"""The top line of every screen: which server, and whether it answers."""

from __future__ import annotations

import math
import time

from rich.text import Text
from textual.widgets import Static


class ConnectionBanner(Static):
    """`berth · URL · connected`, or `disconnected, retrying in 2 s: why` in the error colour."""

    def __init__(self, label: str, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.label = label
        self.connected: bool | None = None
        self.down: tuple[str, float] | None = None  # (why, when the next try is due)

    def on_mount(self) -> None:
        self.update(Text(f"berth · {self.label} · connecting..."))
        self.set_interval(1.0, self._count_down)

    def _now(self) -> float:
        clock = getattr(self.app, "clock", time.time)  # the app's clock: tests fix it
        return float(clock())

    def set_connected(self, extra: str = "") -> None:
        self.connected = True
        self.down = None
        self.remove_class("-down")
        self.update(Text(f"berth · {self.label} · connected" + (f" · {extra}" if extra else "")))

    def set_error(self, message: str) -> None:
        """Connected, but the server refused what we asked (a 401, a 404...)."""
        self.connected = None
        self.down = None
        self.add_class("-down")
        self.update(Text(f"berth · {self.label} · error: {message}"))

    def set_down(self, message: str, retry_s: float) -> None:
        """Counts down to the next try each second, not only when a try fails again."""
        self.connected = False
        self.add_class("-down")
        self.down = (message, self._now() + retry_s)
        self._count_down()

    def _count_down(self) -> None:
        if self.down is None:
            return
        message, due = self.down
        left = math.ceil(due - self._now() - 1e-6)
        when = f"retrying in {left} s" if left > 0 else "retrying now"
        self.update(Text(f"berth · {self.label} · disconnected, {when}: {message}"))
