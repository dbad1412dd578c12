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


def never_fits(tier: Tier, hardware: Hardware) -> bool:
    """More than the whole node has (GET /api/hardware `capacity`): no amount of
    stopping or deleting makes room for it (the API answers 422 tier_exceeds_node)."""
    cap = hardware.capacity
    return ((tier.cpus is not None and cap.cpus is not None and tier.cpus > cap.cpus)
            or (tier.memory_bytes is not None and cap.memory_bytes is not None
                and tier.memory_bytes > cap.memory_bytes)
            or bool(tier.gpus and tier.gpus > (cap.gpus or 0)))


def no_room(tier: Tier, hardware: Hardware) -> str:
    """Why a tier cannot be chosen now, in a few words: it never fits this node, or
    which of its resources the node does not have free, and how much it has."""
    if never_fits(tier, hardware):
        return "never fits this node"
    free = hardware.free
    short = []
    if tier.cpus is not None and free.cpus is not None and tier.cpus > free.cpus:
        short.append(f"{fmt.cpus(max(free.cpus, 0))} CPU")
    if (tier.memory_bytes is not None and free.memory_bytes is not None
            and tier.memory_bytes > free.memory_bytes):
        short.append(short_size(max(free.memory_bytes, 0)))
    if tier.gpus and (free.gpus or 0) < tier.gpus:
        short.append(f"{max(free.gpus or 0, 0)} GPU")
    return ", ".join(short) + " free" if short else "the node is full"


def short_size(n: int | None) -> str:
    """`16 GiB` for whole GiB (tiers mostly are), else as fmt.size: tier lines stay short."""
    if n is not None and n > 0 and n % fmt.GiB == 0:
        return f"{n // fmt.GiB} GiB"
    return fmt.size(n)


def tier_text(t: Tier, hardware: Hardware, name_width: int) -> Text:
    """One line: `medium  4 CPU  8 GiB 0 GPU 0.132/h`, and why it cannot be chosen."""
    text = Text(f"{t.name:<{name_width}} {fmt.cpus(t.cpus):>2} CPU "
                f"{short_size(t.memory_bytes):>6} {t.gpus or 0} GPU "
                f"{fmt.per_hour(t.price_per_hour):>7}")
    if not t.fits_free:
        text.append(f"  {no_room(t, hardware)}")
    return text


@dataclass(frozen=True)
class FormData:
    hardware: Hardware
    models: list[Model] | None  # None: not asked this time (they change rarely)
    taken: set[str]
    created: Deployment | None


class NewDeploymentScreen(PollingScreen):
    poll_s = 2.0
    # The tier and model lists side by side only where both have room for one-line
    # entries; stacked (each full width, -narrow or -medium) below 140 columns.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-medium"), (140, "-wide")]
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
        self.created_dep: Deployment | None = None
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
                    yield Label("Hardware tier (greyed out: cannot be chosen now)")
                    yield OptionList(id="tiers")
                with Vertical(id="model-box"):
                    yield Label("Model (task · fits the tier? · weights on the server?)")
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
        self.validator.taken = data.taken
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
        width = max((len(t.name) for t in hardware.tiers), default=0)
        tiers.set_options([Option(tier_text(t, hardware, width), id=t.name,
                                  disabled=not t.fits_free) for t in hardware.tiers])
        names = [t.name for t in hardware.tiers]
        fitting = [i for i, t in enumerate(hardware.tiers) if t.fits_free]
        # once created, the tier stays highlighted although the new deployment took it
        if chosen is not None and chosen.name in names and (
                self.created is not None or hardware.tiers[names.index(chosen.name)].fits_free):
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
        """One line: `facebook/opt-125m  text  fits  no weights`."""
        text = Text(m.id, style="bold")
        text.append(f"  {m.task or '?'}")
        if tier is not None:
            fits = tier.name in m.fits
            text.append("  ")
            text.append(themed(self.app, "fits" if fits else "too big",
                               "text-success" if fits else "text-error"))
        text.append("  ")
        text.append(themed(self.app, "weights here", "text-success") if m.present
                    else themed(self.app, "no weights", "text-warning"))
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
        if self.created_dep is not None:  # done: the name is taken now, by this one
            dep = self.created_dep
            self.query_one("#choice", Static).update(Text(
                f"created {dep.name}: {dep.model or fmt.DASH} on {dep.hardware or fmt.DASH}; "
                "esc goes back"))
            return
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
        self.created_dep = dep
        self.validator.taken.add(dep.name)
        self.query_one("#name", Input).disabled = True
        error = self.query_one("#name-error", Static)
        error.update(Text(f"✓ {dep.name} created"))
        error.remove_class("-invalid")
        self._choice()
        self.progress.append(Text(f"created {dep.name}"))
        self._progress(dep)
        # the progress is the form's last part: keep the form scrolled to its end as
        # lines come (in a short terminal it is below the lists), until the person scrolls
        self.query_one("#form", VerticalScroll).anchor()
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
        error = self.query_one("#form-error", Static)
        error.update(Text(message))
        if message:
            self._into_view(error)

    def _into_view(self, widget: Static) -> None:
        """Below the lists, in a short terminal, an error is out of sight: bring it in,
        once it has its new height."""
        self.call_after_refresh(widget.scroll_visible, animate=False)

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
