"""New deployment: endpoint name (checked as you type), hardware tier, model; then it
shows the deployment coming up. The API's errors are shown in the form."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from tui import format as fmt
from tui.api import Deployment, Hardware, Model, Tier
from tui.client import ApiError, gather
from tui.names import name_problem
from tui.polling import PollingScreen
from tui.widgets.banner import ConnectionBanner
from tui.widgets.keys import Keys
from tui.widgets.theme_text import status_text, themed


class EndpointName(Validator):
    """The API's rule for endpoint names, and not one that is taken."""

    def __init__(self, taken: set[str]) -> None:
        super().__init__()
        self.taken = taken

    def validate(self, value: str) -> ValidationResult:
        problem = name_problem(value)
        if problem is None and value in self.taken:
            problem = f"{value} already exists"
        return self.failure(problem) if problem else self.success()


def no_room(tier: Tier, hardware: Hardware) -> str:
    """Which of the tier's resources the node does not have free, and how much it has."""
    free = hardware.free
    short = []
    if tier.cpus is not None and free.cpus is not None and tier.cpus > free.cpus:
        short.append(f"{fmt.cpus(free.cpus)} CPU")
    if (tier.memory_bytes is not None and free.memory_bytes is not None
            and tier.memory_bytes > free.memory_bytes):
        short.append(fmt.size(free.memory_bytes))
    if tier.gpus and (free.gpus or 0) < tier.gpus:
        short.append(f"{free.gpus or 0} GPU")
    return ", ".join(short) + " free" if short else "the node is full"


@dataclass(frozen=True)
class FormData:
    hardware: Hardware
    models: list[Model] | None  # None: not asked this time (they change rarely)
    taken: set[str]
    created: Deployment | None


class NewDeploymentScreen(PollingScreen):
    poll_s = 2.0
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("ctrl+s", "create", "Create"),
    ]

    def __init__(self, taken: set[str] | None = None) -> None:
        super().__init__()
        self.validator = EndpointName(set(taken or ()))
        self.tiers: list[Tier] = []
        self.models: list[Model] | None = None
        self.created: str | None = None  # the name, once the API took it
        self.last_status: tuple[str, str | None] | None = None
        self.progress: list[Text] = []

    def compose(self) -> ComposeResult:
        yield ConnectionBanner(self.berth.label)
        with VerticalScroll(id="form"):
            yield Label("New deployment", id="form-title")
            yield Label("Endpoint name (a-z, 0-9 and '-', 1-63 characters)")
            yield Input(placeholder="e.g. chat-prod", id="name", validators=[self.validator],
                        validate_on=["changed", "submitted"], max_length=80)
            yield Static(id="name-error")
            with Horizontal(id="choices"):
                with Vertical(id="tier-box"):
                    yield Label("Hardware tier (greyed out: no room on the node)")
                    yield OptionList(id="tiers")
                with Vertical(id="model-box"):
                    yield Label("Model (task · fits the tier · weights on the server)")
                    yield OptionList(id="models")
            yield Static(id="choice")
            yield Static(id="form-error")
            with Horizontal(id="form-buttons"):
                yield Button("Create", variant="primary", id="create")
                yield Button("Cancel", id="cancel")
            yield Static(id="progress")
        yield Keys()

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    # -- data ------------------------------------------------------------------------

    async def fetch(self) -> FormData:
        calls = [self.client.hardware(), self.client.deployments()]
        if self.models is None:
            calls.append(self.client.models())
        if self.created is not None:
            calls.append(self.client.deployment(self.created))
        results = await gather(*calls)
        hardware, deps = results[0], results[1]
        rest = results[2:]
        models = rest.pop(0) if self.models is None else None
        created = rest.pop(0) if self.created is not None else None
        return FormData(hardware, models, {d.name for d in deps}, created)

    def show(self, data: FormData) -> None:
        self.validator.taken = data.taken - ({self.created} if self.created else set())
        if data.hardware.tiers != self.tiers:
            self._set_tiers(data.hardware)
        if data.models is not None:  # weights here and deployable first
            self.models = sorted(data.models, key=lambda m: (not (m.present and m.available),
                                                             m.id.lower()))
            self._set_models()
        if data.created is not None:
            self._progress(data.created)

    def _set_tiers(self, hardware: Hardware) -> None:
        tiers = self.query_one("#tiers", OptionList)
        chosen = self.tier
        self.tiers = hardware.tiers
        options = []
        for t in hardware.tiers:
            text = Text(f"{t.name:<7} {fmt.cpus(t.cpus):>2} CPU {fmt.size(t.memory_bytes):>8} "
                        f"{t.gpus or 0} GPU {fmt.per_hour(t.price_per_hour):>8}")
            if not t.fits_free:
                text.append(f"  no room: {no_room(t, hardware)}")
            options.append(Option(text, id=t.name, disabled=not t.fits_free))
        tiers.set_options(options)
        names = [t.name for t in hardware.tiers]
        fitting = [i for i, t in enumerate(hardware.tiers) if t.fits_free]
        if chosen is not None and chosen.name in names and chosen.fits_free:
            tiers.highlighted = names.index(chosen.name)
        elif fitting:
            tiers.highlighted = fitting[0]
        self._set_models()

    def _set_models(self) -> None:
        if self.models is None:
            return
        box = self.query_one("#models", OptionList)
        chosen = self.model
        tier = self.tier
        options = [Option(self._model_text(m, tier), id=m.id) for m in self.models]
        box.set_options(options)
        ids = [m.id for m in self.models]
        if chosen is not None and chosen.id in ids:
            box.highlighted = ids.index(chosen.id)
        elif ids:
            ready = [i for i, m in enumerate(self.models) if m.present and m.available]
            box.highlighted = ready[0] if ready else 0
        self._choice()

    def _model_text(self, m: Model, tier: Tier | None) -> Text:
        text = Text(m.id, style="bold")
        text.append(f"  {m.task or '?'}")
        if tier is not None:
            fits = tier.name in m.fits
            text.append("  ")
            text.append(themed(self.app, f"fits {tier.name}" if fits else f"too big for "
                               f"{tier.name}", "text-success" if fits else "text-error"))
        text.append("  ")
        text.append(themed(self.app, "weights present", "text-success") if m.present
                    else themed(self.app, "weights absent", "text-warning"))
        if not m.available:
            text.append(f"  unavailable: {m.unavailable_reason or '?'}")
        return text

    @property
    def tier(self) -> Tier | None:
        index = self.query_one("#tiers", OptionList).highlighted
        if index is None or not 0 <= index < len(self.tiers):
            return None
        return self.tiers[index]

    @property
    def model(self) -> Model | None:
        index = self.query_one("#models", OptionList).highlighted
        if self.models is None or index is None or not 0 <= index < len(self.models):
            return None
        return self.models[index]

    # -- the form --------------------------------------------------------------------

    @on(Input.Changed, "#name")
    def name_changed(self, event: Input.Changed) -> None:
        result = event.validation_result
        error = self.query_one("#name-error", Static)
        if result is None or result.is_valid:
            error.update(Text("✓ a good name" if event.value else ""))
            error.remove_class("-invalid")
        else:
            error.update(Text(" ".join(result.failure_descriptions)))
            error.add_class("-invalid")
        self._inputs_changed()

    @on(OptionList.OptionHighlighted, "#tiers")
    def tier_changed(self) -> None:
        if self.models is not None:
            box = self.query_one("#models", OptionList)
            for i, m in enumerate(self.models):
                box.replace_option_prompt_at_index(i, self._model_text(m, self.tier))
        self._inputs_changed()

    @on(OptionList.OptionHighlighted, "#models")
    def model_changed(self) -> None:
        self._inputs_changed()

    def _inputs_changed(self) -> None:
        """An error of the last try is about inputs that are no longer there: gone."""
        if self.created is None and not self.query_one("#create", Button).disabled:
            self._form_error("")
        self._choice()

    def _choice(self) -> None:
        name = self.query_one("#name", Input).value
        tier, model = self.tier, self.model
        what = (f"{model.id if model else '(choose a model)'} on "
                f"{tier.name if tier else '(choose a tier)'}"
                + (f" at {fmt.per_hour(tier.price_per_hour)}" if tier else ""))
        result = self.validator.validate(name)
        if not name:
            line = f"name it, then create: {what}"
        elif not result.is_valid:
            line = (f"cannot create {name!r} (endpoint name: "
                    f"{' '.join(result.failure_descriptions)}): {what}")
        else:
            line = f"will create {name}: {what}"
        self.query_one("#choice", Static).update(Text(line))

    @on(Input.Submitted, "#name")
    @on(Button.Pressed, "#create")
    def submit(self) -> None:
        self.action_create()

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        self.dismiss()

    def action_create(self) -> None:
        if self.created is not None:
            self._form_error("already created; esc goes back to the deployments")
            return
        name_input = self.query_one("#name", Input)
        name = name_input.value
        result = self.validator.validate(name)
        if not result.is_valid:
            self._form_error("endpoint name: " + " ".join(result.failure_descriptions))
            name_input.focus()
            return
        tier, model = self.tier, self.model
        if tier is None or not tier.fits_free:
            self._form_error("choose a hardware tier that fits the free capacity")
            return
        if model is None:
            self._form_error("choose a model")
            return
        self._form_error("")
        self.query_one("#create", Button).disabled = True
        self.run_worker(self._create(name, model.id, tier.name), group="create",
                        exclusive=True, exit_on_error=False)

    async def _create(self, name: str, model: str, hardware: str) -> None:
        try:
            dep = await self.client.create(name, model, hardware)
        except ApiError as e:
            self.post_message(self.CreateFailed(e))
        else:
            self.post_message(self.Created(dep))

    class Created(Message):
        def __init__(self, dep: Deployment) -> None:
            super().__init__()
            self.dep = dep

    class CreateFailed(Message):
        def __init__(self, error: ApiError) -> None:
            super().__init__()
            self.error = error

    def on_new_deployment_screen_created(self, message: Created) -> None:
        dep = message.dep
        self.created = dep.name
        self.query_one("#name", Input).disabled = True
        self.progress.append(Text(f"created {dep.name}"))
        self._progress(dep)
        self.poll_now()

    def on_new_deployment_screen_create_failed(self, message: CreateFailed) -> None:
        e = message.error
        self.query_one("#create", Button).disabled = False
        where = f"{e.param}: " if e.param else ""
        self._form_error(f"{where}{e.message}")
        if e.param == "name":
            error = self.query_one("#name-error", Static)
            error.update(Text(e.message))
            error.add_class("-invalid")

    def _form_error(self, message: str) -> None:
        self.query_one("#form-error", Static).update(Text(message))

    def _progress(self, dep: Deployment) -> None:
        """One line per status change of the new deployment, until it is up."""
        key = (dep.status, dep.reason)
        if key == self.last_status:
            return
        self.last_status = key
        line = Text.assemble(f"{fmt.clock_now(self.now())}  {dep.name} is ",
                             status_text(self.app, dep.status),
                             f" ({dep.reason})" if dep.reason else "")
        if dep.status == "ready":
            line.append(f": /endpoints/{dep.name}/v1 answers; esc goes back")
        elif dep.status == "failed":
            line.append("; esc goes back, its events say why")
        self.progress.append(line)
        self.query_one("#progress", Static).update(Text("\n").join(self.progress[-12:]))
