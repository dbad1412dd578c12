"""Admin API routes over deployments (read side; the lifecycle work adds the rest)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from server import keys
from server.errors import BadRequest, NotFound
from server.supervisor import Deployment


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def deployment_json(dep: Deployment) -> dict[str, Any]:
    return {
        "name": dep.name,
        "model": dep.model,
        "hardware": dep.tier.name,
        "owner": dep.owner,
        "task": str(dep.task) if dep.task else None,
        "status": str(dep.state),
        "reason": dep.reason,
        "pid": dep.pid,
        "restarts": dep.restarts,
        "created_at": iso(dep.created_at),
        "ready_at": iso(dep.ready_at),
        "retry_at": iso(dep.retry_at),
        "endpoint": f"/endpoints/{dep.name}/v1",
        "slice": dep.slice.info.as_json() if dep.slice else None,
    }


def _get(request: web.Request) -> Deployment:
    name = request.match_info["name"]
    dep = request.app[keys.SUPERVISOR].get(name)
    if dep is None:
        raise NotFound(f"deployment {name!r} does not exist", code="deployment_not_found")
    return dep


async def list_deployments(request: web.Request) -> web.Response:
    deps = request.app[keys.SUPERVISOR].all()
    return web.json_response({"data": [deployment_json(d) for d in deps]})


async def get_deployment(request: web.Request) -> web.Response:
    return web.json_response(deployment_json(_get(request)))


async def deployment_events(request: web.Request) -> web.Response:
    dep = _get(request)
    limit = _int_query(request, "limit", 100, 1, 10_000)
    events = await request.app[keys.STORE].events(dep.id, limit)
    return web.json_response({"data": [
        {"at": iso(e.at), "status": e.status, "reason": e.reason, "pid": e.pid}
        for e in events]})


async def deployment_logs(request: web.Request) -> web.Response:
    dep = _get(request)
    tail = _int_query(request, "tail", 200, 1, 100_000)
    return web.json_response({"name": dep.name, "lines": _tail(dep.log_path, tail)})


async def healthz(request: web.Request) -> web.Response:
    deps = request.app[keys.SUPERVISOR].all()
    return web.json_response({"status": "ok", "deployments": {
        d.name: str(d.state) for d in deps}})


def _int_query(request: web.Request, key: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{key} must be an integer, got {raw!r}", param=key) from None
    if not lo <= value <= hi:
        raise BadRequest(f"{key} must be between {lo} and {hi}", param=key)
    return value


def _tail(path: os.PathLike[str], lines: int) -> list[str]:
    """The last `lines` lines of a file, reading backwards from its end."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            block, data = 8192, b""
            while end > 0 and data.count(b"\n") <= lines:
                step = min(block, end)
                end -= step
                f.seek(end)
                data = f.read(step) + data
    except FileNotFoundError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:]
