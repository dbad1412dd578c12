"""OpenAI-compatible inference routes: validate, look the endpoint up, proxy to its engine.

The body is validated here with the same pydantic models the engine uses
(`engines.protocol.REQUEST_BODIES`), so bad input is answered without touching an
engine. Then the original bytes go to the engine over its Unix socket and the answer
streams back as it arrives (`iter_any`); nothing is buffered whole.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from engines.protocol import (
    BASE_URL_HEADER,
    IMAGES_GENERATIONS,
    REQUEST_BODIES,
    TASK_ROUTES,
    describe_validation_error,
    error_body,
)
from server import keys
from server.accounting import Record
from server.auth import principal
from server.bodies import json_object
from server.deployment import Deployment
from server.errors import ApiError, BadRequest, NotFound, Unavailable
from server.states import State

log = logging.getLogger(__name__)

_HOP_HEADERS = {"content-type", "content-length", "x-request-id"}
_SMALL_BODY = 1 << 20  # answers up to this size are read whole and sent in one write


async def list_models(request: web.Request) -> web.Response:
    sup = request.app[keys.SUPERVISOR]
    only = request.match_info.get("name")
    caller = principal(request)
    deps = [d for d in sup.all()
            if (only is None or d.name == only) and caller.may_call(d.owner)]
    if only is not None and not deps:
        raise _unknown(only)
    return web.json_response({"object": "list", "data": [_model(d) for d in deps]})


async def get_model(request: web.Request) -> web.Response:
    """GET /v1/models/{model}: one endpoint (the openai client's models.retrieve)."""
    name = request.match_info["model"]
    dep = _callable(request, name)
    if dep is None:
        raise _unknown(name)
    return web.json_response(_model(dep))


def _model(dep: Deployment) -> dict[str, Any]:
    return {"id": dep.name, "object": "model", "created": int(dep.created_at),
            "owned_by": dep.owner, "root": dep.model, "status": str(dep.state)}


async def inference(request: web.Request) -> web.StreamResponse:
    """Every request is accounted once: answered, refused before the engine, or dropped."""
    rec = Record(route="/v1/" + request.match_info["route"])
    try:
        resp = await _inference(request, rec)
    except ApiError as e:
        rec.finish(e.status, "rejected")
        raise
    except asyncio.CancelledError:
        rec.finish(499, "cancelled")  # the client went away
        raise
    except Exception:
        rec.finish(500, "error")
        raise
    else:
        rec.finish(resp.status, rec.outcome if resp.status < 400 else "error")
        return resp
    finally:
        request.app[keys.ACCOUNTING].add(rec)


async def _inference(request: web.Request, rec: Record) -> web.StreamResponse:
    route = rec.route
    body_cls = REQUEST_BODIES.get(route)
    if body_cls is None:
        raise NotFound(f"no route {request.method} {request.path}", code="not_found")
    max_body = request.app[keys.CONFIG].server.max_body_bytes
    if request.content_length is not None and request.content_length > max_body:
        raise BadRequest(f"request body is {request.content_length} bytes; the limit is "
                         f"{max_body}", code="request_too_large", status=413)
    raw, data = await json_object(request)
    named = request.match_info.get("name") or data.get("model")
    dep = _callable(request, named) if isinstance(named, str) else None
    if dep is not None:  # a bad body is then recorded against the endpoint it was for
        rec.deployment, rec.deployment_id, rec.owner = dep.name, dep.id, dep.owner
    try:
        body = body_cls.model_validate(data)
    except ValidationError as e:
        message, param = describe_validation_error(e)
        raise BadRequest(message, code="invalid_value", param=param) from None

    name = request.match_info.get("name") or getattr(body, "model", None)
    if not name:
        raise BadRequest("you must provide a model parameter (the endpoint name)",
                         code="missing_model", param="model")
    if dep is None:
        raise _unknown(name)  # another user's endpoint does not exist, as far as you know
    _check_serves(dep, route)
    _check_open(dep)
    # A full queue raises QueueFull (429), a long wait QueueTimeout (503): both ApiErrors.
    async with dep.gate.slot():
        _check_open(dep)  # again: it may have crashed, stopped or be deleting meanwhile
        dep.enter()
        try:
            return await _proxy(request, dep, route, raw, rec,
                                stream=bool(getattr(body, "stream", False))
                                or getattr(body, "stream_format", None) == "sse")
        finally:
            dep.leave()


def _callable(request: web.Request, name: str) -> Deployment | None:
    """The deployment `name` if the caller may call it (else, to them, there is none)."""
    dep = request.app[keys.SUPERVISOR].get(name)
    return dep if dep is not None and principal(request).may_call(dep.owner) else None


def _check_open(dep: Deployment) -> None:
    if dep.deleting:
        raise Unavailable(f"deployment {dep.name!r} is being deleted",
                          code="deployment_deleting")
    if not dep.ready:
        raise _not_ready(dep)


def _unknown(name: str) -> NotFound:
    return NotFound(f"the model (endpoint) {name!r} does not exist", code="model_not_found",
                    param="model")


def _check_serves(dep: Deployment, route: str) -> None:
    if dep.task is None:
        return
    served = TASK_ROUTES[dep.task]
    if route not in served:
        raise BadRequest(f"deployment {dep.name!r} ({dep.task} model) does not serve {route}; "
                         f"it serves {', '.join(served)}", code="unsupported_route")


def _not_ready(dep: Deployment) -> Unavailable:
    if dep.state in (State.FAILED, State.STOPPED, State.STOPPING):
        return Unavailable(f"deployment {dep.name!r} is {dep.state}: {dep.reason}",
                           code=f"deployment_{dep.state}")
    wait = 5
    if dep.state is State.CRASHED and dep.retry_at is not None:
        wait = max(1, math.ceil(dep.retry_at - time.time())) + 5
    return Unavailable(f"deployment {dep.name!r} is {dep.state}, not ready yet",
                       code="deployment_not_ready", headers={"Retry-After": str(wait)})


async def _proxy(request: web.Request, dep: Deployment, route: str, raw: bytes, rec: Record,
                 *, stream: bool) -> web.StreamResponse:
    assert dep.client is not None
    try:
        sent = {"Content-Type": "application/json"}
        if route == IMAGES_GENERATIONS:  # the engine makes absolute `url`s with it
            sent[BASE_URL_HEADER] = f"{request.scheme}://{request.host}"
        upstream = await dep.client.post(route, data=raw, headers=sent)
    except aiohttp.ClientConnectionError:
        raise Unavailable(f"deployment {dep.name!r} is not answering (its engine is "
                          "restarting)", code="engine_unavailable",
                          headers={"Retry-After": "2"}) from None
    headers = {k: v for k, v in upstream.headers.items() if k.lower() in _HOP_HEADERS}
    length = upstream.content_length
    if not stream and length is not None and length <= _SMALL_BODY:
        # A small, complete JSON answer: one write (headers and body in one syscall).
        try:
            body = await upstream.read()
        except aiohttp.ClientError:
            upstream.close()
            raise Unavailable(f"deployment {dep.name!r} engine stopped mid-answer",
                              code="engine_died", headers={"Retry-After": "2"}) from None
        upstream.release()
        headers.pop("Content-Length", None)
        rec.first_byte()
        if upstream.status == 200:
            rec.usage_from_body(body)
        return web.Response(body=body, status=upstream.status, headers=headers)
    resp = web.StreamResponse(status=upstream.status, headers=headers)
    if stream:
        resp.headers["Cache-Control"] = "no-cache"
    clean = False
    try:
        await resp.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                rec.first_byte()
                await resp.write(chunk)
                rec.usage_from_chunk(chunk)
        except aiohttp.ClientPayloadError:
            # The engine died mid-answer: end the stream with an error the client can read.
            log.warning("engine of %s broke off an answer", dep.name)
            rec.outcome = "error"
            if stream:
                event = error_body(f"deployment {dep.name!r} engine stopped mid-answer",
                                   "server_error", "engine_died")
                await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            return resp
        await resp.write_eof()
        clean = True
        return resp
    except ConnectionResetError:
        # The client went away (a cancelled handler ends here too, via finally):
        # dropping the engine connection cancels the generation in the engine.
        log.debug("client of %s disconnected mid-answer", dep.name)
        rec.outcome = "cancelled"
        return resp
    finally:
        if clean:
            upstream.release()
        else:
            upstream.close()

