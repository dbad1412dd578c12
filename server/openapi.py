"""GET /openapi.json, built from the route table and the pydantic request models."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from engines.protocol import error_body

_PARAM = re.compile(r"\{(\w+)(:[^}]*)?\}")


def build(routes: Any) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        concrete = ([(route.path.split("{route:")[0] + sub, body) for sub, body in route.expands]
                    or [(route.path, route.body)])
        for path, body in concrete:
            spec_path = _PARAM.sub(r"{\1}", path)
            op: dict[str, Any] = {
                "summary": route.summary,
                "tags": [route.tag],
                "responses": {"default": {"description": "JSON error", "content": {
                    "application/json": {"example": error_body("message")}}}},
            }
            params = [m.group(1) for m in _PARAM.finditer(spec_path)]
            if params:
                op["parameters"] = [{"name": p, "in": "path", "required": True,
                                     "schema": {"type": "string"}} for p in params]
            if body is not None:
                op["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": body.model_json_schema()}}}
            op["responses"]["200"] = {"description": "OK"}
            paths.setdefault(spec_path, {})[route.method.lower()] = op
    return {"openapi": "3.1.0",
            "info": {"title": "berth", "version": "0.1.0",
                     "description": "Dedicated, always-on model deployments."},
            "paths": paths}


async def handler(request: web.Request) -> web.Response:
    from server.routes import ROUTES  # the table imports this module

    return web.json_response(build(ROUTES))
