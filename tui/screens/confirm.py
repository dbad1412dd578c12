"""Delete? Stop? A modal that names the deployment; Cancel has the focus."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from tui import format as fmt
from tui.api import Deployment


class Confirm(ModalScreen[bool]):
    """Asks before an action that is costly to undo; `y` or the named button says yes."""

    DEFAULT_CLASSES = "confirm"
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "Cancel"),
    ]
    VERB = "?"  # "Delete", "Stop"

    def __init__(self, dep: Deployment) -> None:
        super().__init__()
        self.dep = dep

    def details(self) -> str:
        raise NotImplementedError

    def compose(self) -> ComposeResult:
        d = self.dep
        with Vertical(id="dialog"):
            yield Static(Text(f"{self.VERB} deployment {d.name}?", style="bold"),
                         id="question")
            yield Static(Text(f"{d.model or fmt.DASH} on {d.hardware or fmt.DASH}, "
                              f"{d.status}. {self.details()}"), id="details")
            with Horizontal(id="buttons"):
                yield Button(Content(f"{self.VERB} {d.name}"), variant="error", id="yes")
                yield Button("Cancel", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class ConfirmDelete(Confirm):
    BINDINGS = [Binding("y", "answer(True)", "Delete")]
    VERB = "Delete"

    def details(self) -> str:
        return "Its engine stops and the name is freed; its billing history is kept."


class ConfirmStop(Confirm):
    BINDINGS = [Binding("y", "answer(True)", "Stop")]
    VERB = "Stop"

    def details(self) -> str:
        return ("Its engine stops and its endpoint stops answering until it is started "
                "again (s).")
