"""The engine's HTTP face: health, request parsing, errors, dispatch to the task.

`create_app(spec)` answers `/health` at once; the task module (and torch with it)
is imported and the model loaded on the worker thread afterwards. Nothing here
imports torch.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from engines import protocol
from engines.base import RequestError, TaskEngine, Worker
from engines.protocol import EngineHealth, EngineSpec, HealthState, Task

log = logging.getLogger(__name__)

TASK_MODULES: dict[Task, str] = {
    Task.TEXT: "engines.text",
    Task.EMBEDDINGS: "engines.embeddings",
    Task.MODERATION: "engines.moderation",
    Task.IMAGES: "engines.images",
    Task.CAPTION: "engines.caption",
    Task.VQA: "engines.vqa",
    Task.SPEECH: "engines.speech",
}

FAILED_LINGER_S = 1.0  # how long `failed` is reported before the process exits
MAX_BODY_BYTES = 32 * 1024 * 1024


class EngineState:
    """What the engine is doing; the one app-scoped object."""

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self.state = HealthState.LOADING
        self.detail: str | None = "importing the task module"
        self.engine: TaskEngine | None = None
        self.in_flight = 0
        self.worker = Worker(f"{spec.name}-worker")
        self.exit_code: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._loader: asyncio.Task[None] | None = None

    def health(self) -> EngineHealth:
        return EngineHealth(
            state=self.state,
            pid=os.getpid(),
            name=self.spec.name,
            model=self.spec.model,
            task=self.spec.task,
            detail=self.detail,
            in_flight=self.in_flight,
            context_length=self.engine.context_length if self.engine else None,
        )

    def request_exit(self, code: int) -> None:
        """Asks the process (see `engines.__main__`) to shut down with `code`."""
        if not self.exit_code.done():
            self.exit_code.set_result(code)

    def start_loading(self) -> None:
        if self._loader is None:
            self._loader = asyncio.create_task(self._load(), name=f"{self.spec.name}-load")

    async def _load(self) -> None:
        try:
            self.detail = f"loading {self.spec.model_path}"
            self.engine = await self.worker.submit(_load_engine, self.spec, self.worker)
        except Exception as exc:
            log.error("loading %s failed", self.spec.model_path, exc_info=exc)
            self.state = HealthState.FAILED
            self.detail = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(FAILED_LINGER_S)
            self.request_exit(protocol.EXIT_LOAD_FAILED)
            return
        self.state = HealthState.READY
        self.detail = None
        log.info("ready (context length %s)", self.engine.context_length)

    async def close(self) -> None:
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
        if self.engine is None:
            self.worker.close(timeout=0)  # a load cannot be interrupted; don't wait for it
            return
        self.engine.close()  # running generations stop at their next token
        await asyncio.to_thread(self.worker.close)


STATE = web.AppKey("state", EngineState)


def _load_engine(spec: EngineSpec, worker: Worker) -> TaskEngine:
    module = importlib.import_module(TASK_MODULES[spec.task])
    engine: TaskEngine = module.load(spec, worker)
    return engine


def create_app(spec: EngineSpec, *, autoload: bool = True) -> web.Application:
    """The engine app; with autoload=False the caller starts loading (after binding)."""
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY_BYTES)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        state = EngineState(spec)
        app[STATE] = state
        if autoload:
            state.start_loading()
        yield
        await state.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get(protocol.HEALTH, _health)
    for route in protocol.INFERENCE_ROUTES:
        app.router.add_post(route, _inference)
    return app


async def _health(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].health().to_dict())


async def _inference(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    route = request.path
    served = protocol.TASK_ROUTES[state.spec.task]
    if route not in served:
        raise RequestError(
            400,
            f"this engine serves the {state.spec.task} task: {', '.join(served)}; not {route}",
            code="unsupported_route",
        )
    body = await _parse_body(request, route)
    engine = state.engine
    if state.state is not HealthState.READY or engine is None:
        raise RequestError(
            503,
            f"the engine is {state.state}: {state.detail}",
            type="server_error",
            code=f"engine_{state.state}",
            headers={"Retry-After": "1"},
        )
    state.in_flight += 1
    try:
        return await engine.handle(route, body, request)
    finally:
        state.in_flight -= 1


async def _parse_body(request: web.Request, route: str) -> BaseModel:
    raw = await request.read()
    try:
        data = protocol.parse_json(raw)
    except RecursionError as exc:
        raise RequestError(400, "the request body is not valid JSON: nested too deeply",
                           code="invalid_json") from exc
    except ValueError as exc:  # JSONDecodeError says where: "Expecting value: line 1 ..."
        raise RequestError(400, f"the request body is not valid JSON: {exc}",
                           code="invalid_json") from exc
    if not isinstance(data, dict):
        raise RequestError(
            400, f"the request body must be a JSON object, not {protocol.json_type(data)}",
            code="invalid_body")
    try:
        return protocol.REQUEST_BODIES[route].model_validate(data)
    except ValidationError as exc:
        message, param = protocol.describe_validation_error(exc)
        raise RequestError(400, message, code="invalid_value", param=param) from exc


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as exc:
        return _json_error(exc.status, exc.message, exc.type, exc.code, exc.param, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        if exc.status == 404:
            message = f"no route {request.method} {request.path} on this engine"
        else:
            message = f"{exc.reason}: {request.method} {request.path}"
        code = exc.reason.lower().replace(" ", "_")
        return _json_error(exc.status, message, "invalid_request_error", code, None, headers)
    except Exception as exc:  # one request failed; the engine lives on
        request_id = uuid.uuid4().hex[:16]
        log.exception("request %s %s failed [%s]", request.method, request.path, request_id)
        return _json_error(
            500,
            f"the engine failed this request: {type(exc).__name__}: {exc} "
            f"(request id {request_id})",
            "server_error",
            "engine_error",
            None,
            {"X-Request-Id": request_id},
        )


def _json_error(
    status: int,
    message: str,
    type: str,
    code: str | None,
    param: str | None,
    headers: dict[str, str] | None,
) -> web.Response:
    body: dict[str, Any] = protocol.error_body(message, type, code, param)
    return web.json_response(body, status=status, headers=headers)
