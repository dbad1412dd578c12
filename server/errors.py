"""One exception base that carries an HTTP status and an error code, and the one
middleware that turns it (and everything else) into the JSON error shape."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from engines.protocol import error_body

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 400
    type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        code: str,  # always: clients branch on it, a null code is a bug
        param: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return json_error(self.status, self.message, self.type, self.code, self.param,
                          self.headers)


class BadRequest(ApiError):
    status = 400


class NotFound(ApiError):
    status = 404
    type = "not_found_error"


class Conflict(ApiError):
    status = 409
    type = "conflict_error"


class Unprocessable(ApiError):
    """Valid JSON, impossible request."""

    status = 422


class Unavailable(ApiError):
    status = 503
    type = "service_unavailable_error"


def json_error(status: int, message: str, type: str = "invalid_request_error",
               code: str | None = None, param: str | None = None,
               headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(message, type, code, param), status=status,
                             headers=headers)


_HTTP_TYPES = {404: "not_found_error", 405: "invalid_request_error",
               413: "invalid_request_error"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return e.response()
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed",
                413: "request_too_large"}.get(e.status, f"http_{e.status}")
        message = e.text if e.status != 404 else f"no route {request.method} {request.path}"
        if e.status == 413:
            message = "request body too large"
        return json_error(e.status, message or e.reason,
                          _HTTP_TYPES.get(e.status, "invalid_request_error"), code,
                          headers={k: v for k, v in e.headers.items() if k == "Allow"})
    except Exception:
        request_id = uuid.uuid4().hex[:12]
        log.exception("unhandled error on %s %s (request %s)", request.method,
                      request.path, request_id)
        return json_error(500, f"internal error (request id {request_id})", "server_error",
                          "internal_error")

