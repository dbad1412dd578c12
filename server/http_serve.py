"""Serving the app: aiohttp's `run_app`, with two changes.

- Requests that fail in the HTTP parser (a header over 8 KiB, an unknown method, bytes
  that are not HTTP) are answered in berth's JSON error shape, with a code, instead of
  aiohttp's plain text. They never reach the app, so no middleware can answer them; the
  connection's handler does.
- Connections are capped below the process's file limit: a flood of idle or half-sent
  requests is turned away at the door instead of taking the descriptors the supervisor
  needs to watch its engines (health checks, cgroup files, the database). A connection
  with no request in progress is closed after `idle_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import time
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


class _Server(web.Server):
    max_connections = 1024
    _refused_at = 0.0

    def __call__(self) -> web_protocol.RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: web_protocol.RequestHandler,
                        transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if len(self.connections) > self.max_connections:
            transport.close()  # before a byte is read: the cheapest refusal there is
            now = time.monotonic()
            if now - self._refused_at > 10:
                log.warning("refusing connections: %d open, the limit is %d",
                            len(self.connections), self.max_connections)
                self._refused_at = now


class _Runner(web.AppRunner):
    max_connections = 1024

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # the same server; only its handlers differ
        assert isinstance(server, _Server)
        server.max_connections = self.max_connections
        return server


def connection_limit(wanted: int, reserve: int = 512) -> int:
    """Raise the soft file limit to the hard one (as far as 65536) and cap connections
    so that `reserve` descriptors always stay for the server's own work."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, soft - reserve))


def serve(app: web.Application, sock: socket.socket, *, loop: asyncio.AbstractEventLoop,
          on_ready: Callable[[], None], max_connections: int = 1024,
          idle_timeout_s: float = 15.0, **runner_args: Any) -> None:
    """Serve `app` on `sock` until SIGINT or SIGTERM, then clean up as `run_app` does
    (the app's cleanup, then every task left is cancelled and awaited)."""
    limit = connection_limit(max_connections)

    async def run() -> None:
        runner = _Runner(app, handle_signals=True, keepalive_timeout=idle_timeout_s,
                         **runner_args)
        runner.max_connections = limit
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
