"""A screen that fetches from the server in a worker while it is shown.

The worker calls `fetch()` about every `poll_s` seconds (sooner after `poll_now()`) and
posts what it got; the handler passes it to `show()` on the screen's own turn. A server
that does not answer turns the banner into "disconnected, retrying" and the worker
backs off (1, 2, 4, 5 s) and keeps trying; nothing it receives or raises ends the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from textual import events
from textual.message import Message
from textual.screen import Screen
from textual.worker import Worker

from tui.client import AdminClient, ApiError, Disconnected
from tui.widgets.banner import ConnectionBanner

if TYPE_CHECKING:
    from tui.app import BerthApp

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0


class PollingScreen(Screen[Any]):
    poll_s: float | None = None  # None: the app's

    class Fetched(Message):
        def __init__(self, data: Any) -> None:
            super().__init__()
            self.data = data

    class FetchFailed(Message):
        def __init__(self, error: ApiError, retry_s: float | None) -> None:
            super().__init__()
            self.error = error
            self.retry_s = retry_s

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._wake = asyncio.Event()
        self._poller: Worker[None] | None = None

    @property
    def berth(self) -> BerthApp:
        return self.app  # type: ignore[return-value]

    @property
    def client(self) -> AdminClient:
        return self.berth.client

    def now(self) -> float:
        return self.berth.clock()

    # -- what a screen fills in ------------------------------------------------------

    async def fetch(self) -> Any:
        raise NotImplementedError

    def show(self, data: Any) -> None:
        raise NotImplementedError

    def show_error(self, error: ApiError) -> None:
        """An answer that is an API error (not a lost server): said in the banner."""
        for banner in self.query(ConnectionBanner):
            banner.set_error(error.message)

    # -- the worker ----------------------------------------------------------------------

    def on_screen_resume(self, event: events.ScreenResume) -> None:
        if self._poller is None or self._poller.is_finished:
            self._poller = self.run_worker(self._poll, group=f"poll-{id(self)}",
                                           exclusive=True, exit_on_error=False)
        self.poll_now()

    def on_screen_suspend(self, event: events.ScreenSuspend) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None

    def poll_now(self) -> None:
        self._wake.set()

    async def _poll(self) -> None:
        backoff = 1.0
        while True:
            self._wake.clear()
            wait = self.poll_s or self.berth.poll_s
            try:
                data = await self.fetch()
            except Disconnected as e:
                self.post_message(self.FetchFailed(e, backoff))
                wait, backoff = backoff, min(backoff * 2, MAX_BACKOFF_S)
            except ApiError as e:
                backoff = 1.0
                self.post_message(self.FetchFailed(e, None))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug of ours with odd data: say so, keep going
                log.exception("fetch failed")
                self.post_message(self.FetchFailed(
                    ApiError(f"cannot read the answer: {type(e).__name__}: {e}"), None))
            else:
                backoff = 1.0
                self.post_message(self.Fetched(data))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def on_polling_screen_fetched(self, message: PollingScreen.Fetched) -> None:
        self._banner_connected()
        try:
            self.show(message.data)
        except Exception as e:  # never let one odd answer end the console
            log.exception("cannot show the answer")
            self.notify(f"cannot show the answer: {type(e).__name__}: {e}",
                        severity="error", timeout=4, markup=False)

    def on_polling_screen_fetch_failed(self, message: PollingScreen.FetchFailed) -> None:
        if message.retry_s is not None:
            for banner in self.query(ConnectionBanner):
                banner.set_down(message.error.message, message.retry_s)
            self.add_class("-disconnected")
            return
        self.remove_class("-disconnected")
        self.show_error(message.error)

    def _banner_connected(self) -> None:
        self.remove_class("-disconnected")
        for banner in self.query(ConnectionBanner):
            if banner.connected is not True:
                banner.set_connected()
