"""Request bodies: read whole within the configured time, parsed as a JSON object, every
failure a 4xx in the JSON error shape (the router and the admin routes read them alike)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_protocol import RequestPayloadError

from engines.protocol import json_type, parse_json
from server import keys
from server.errors import BadRequest


async def read_body(request: web.Request) -> bytes:
    """The request body, whole; a client that sends less than it announced, or a body
    that cannot be decoded (a bad gzip), is a 4xx, never a 500 or a wait forever."""
    timeout_s = request.app[keys.CONFIG].server.read_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        raise BadRequest(f"the request body did not arrive whole within {timeout_s:g} s",
                         code="request_timeout", status=408) from None
    except (RequestPayloadError, BadHttpMessage) as e:
        cause = e.__cause__ or e.__context__ or e
        raise BadRequest(f"the request body could not be read: {str(cause)[:200]}",
                         code="invalid_body_encoding") from None


async def json_object(request: web.Request) -> tuple[bytes, dict[str, Any]]:
    """The body as sent and as a JSON object (UTF-8 whatever charset the header names)."""
    raw = await read_body(request)
    try:
        data = parse_json(raw)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        raise BadRequest(f"request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object, not {json_type(data)}",
                         code="invalid_body")
    return raw, data
