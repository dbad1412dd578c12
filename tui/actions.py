"""Lifecycle actions on a deployment, shared by the screens that offer them."""

from __future__ import annotations

from collections.abc import Callable

from tui.api import Deployment
from tui.client import ApiError
from tui.polling import PollingScreen


def run_action(screen: PollingScreen, name: str, verb: str,
               then: Callable[[], object] | None = None) -> None:
    """stop/start/restart/delete in a worker; the answer (or error) is a notice;
    `then` runs after a success."""
    screen.notify(f"{verb} {name}...", timeout=2, markup=False)

    async def act() -> None:
        try:
            if verb == "delete":
                await screen.client.delete(name)
            else:
                await screen.client.action(name, verb)
        except ApiError as e:
            screen.notify(f"{verb} {name}: {e.message}", severity="error", timeout=6,
                          markup=False)
        else:
            done = {"stop": "stopped", "start": "started", "restart": "restarted",
                    "delete": "deleted"}[verb]
            screen.notify(f"{name} {done}", timeout=3, markup=False)
            if then is not None:
                then()
        screen.poll_now()

    screen.run_worker(act(), group=f"action-{name}", exit_on_error=False)
    screen.poll_now()


def confirm_delete(screen: PollingScreen, dep: Deployment,
                   then: Callable[[], object] | None = None) -> None:
    from tui.screens.confirm import ConfirmDelete

    def answered(yes: bool | None) -> None:
        if yes:
            run_action(screen, dep.name, "delete", then)

    screen.app.push_screen(ConfirmDelete(dep), answered)


def stop_or_start(screen: PollingScreen, dep: Deployment) -> None:
    """`s`: a stopped (or failed) deployment starts at once; any other is stopped only
    once the person says yes to a dialog naming it (its endpoint stops answering)."""
    if dep.startable:
        run_action(screen, dep.name, "start")
        return
    from tui.screens.confirm import ConfirmStop

    def answered(yes: bool | None) -> None:
        if yes:
            run_action(screen, dep.name, "stop")

    screen.app.push_screen(ConfirmStop(dep), answered)
