"""Serving the app: aiohttp's `run_app`, with one change: requests that fail in the HTTP
parser (a header over 8 KiB, an unknown method, bytes that are not HTTP) are answered
in berth's JSON error shape, with a code, instead of aiohttp's plain text. They never
reach the app, so no middleware can answer them; the connection's handler does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong

from engines.protocol import error_body

log = logging.getLogger(__name__)

_MAX_ECHO = 120  # characters of the offending input quoted back, at most


class _JsonErrorHandler(web_protocol.RequestHandler):
    __slots__ = ()

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        log.debug("refused a malformed request from %s: %s", request.remote, exc)
        code, text = _describe(status, exc, message)
        resp = web.json_response(error_body(text, "invalid_request_error", code, None),
                                 status=status)
        resp.force_close()
        return resp


def _describe(status: int, exc: BaseException | None, message: str | None) -> tuple[str, str]:
    if isinstance(exc, LineTooLong):
        return ("request_line_too_long",
                "the request line or a header is longer than the server reads (8190 bytes)")
    if isinstance(exc, BadHttpMethod):
        return "bad_http_method", "the request method is not an HTTP method"
    detail = (message or str(exc or "") or "malformed request").splitlines()[0]
    if len(detail) > _MAX_ECHO:
        detail = detail[:_MAX_ECHO] + "..."
    return f"bad_http_request_{status}", f"malformed HTTP request: {detail}"


class _JsonErrorServer(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # the same server; only its handlers differ
        return server


def serve(app: web.Application, sock: socket.socket, *, loop: asyncio.AbstractEventLoop,
          on_ready: Callable[[], None], **runner_args: Any) -> None:
    """Serve `app` on `sock` until SIGINT or SIGTERM, then clean up as `run_app` does
    (the app's cleanup, then every task left is cancelled and awaited)."""

    async def run() -> None:
        runner = _Runner(app, handle_signals=True, **runner_args)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            on_ready()
            await asyncio.Event().wait()  # the signal handlers raise GracefulExit
        finally:
            await runner.cleanup()

    asyncio.set_event_loop(loop)
    main = loop.create_task(run())
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
