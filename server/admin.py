"""Admin API routes over deployments (read side; the lifecycle work adds the rest)."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engines.protocol import describe_validation_error
from server import catalog, keys, money
from server.auth import ADMIN_OWNER
from server.bodies import json_object
from server.capacity import InsufficientCapacity, NeverFits
from server.config import NAME_PATTERN, valid_name
from server.deployment import Deployment
from server.errors import BadRequest, Conflict, NotFound, Unprocessable
from server.store import NameTaken

NAME_RULE = ("lowercase letters, digits and '-', 1-63 characters, starting and ending with a "
             f"letter or digit (pattern {NAME_PATTERN})")


class CreateDeployment(BaseModel):
    """The body of POST /api/deployments."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(strict=True, description=f"endpoint name: {NAME_RULE}")
    model: str = Field(strict=True, min_length=1, description="model id or alias")
    hardware: str = Field(strict=True, description="hardware tier")
    owner: str = Field("admin", strict=True, min_length=1, max_length=200)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def deployment_json(dep: Deployment,
                    billed: list[tuple[int, int, str]] | None = None) -> dict[str, Any]:
    return {
        "name": dep.name,
        "model": dep.model,
        "hardware": dep.tier.name,
        "owner": dep.owner,
        "source": dep.source,
        "task": str(dep.task) if dep.task else None,
        "status": str(dep.state),
        "reason": dep.reason,
        "deleting": dep.deleting,
        "pid": dep.pid,
        "restarts": dep.restarts,
        "created_at": iso(dep.created_at),
        "ready_at": iso(dep.ready_at),
        "retry_at": iso(dep.retry_at),
        "endpoint": f"/endpoints/{dep.name}/v1",
        "requests": {"active": dep.gate.active, "queued": dep.gate.waiting,
                     "max_concurrent": dep.gate.max_concurrent,
                     "max_queued": dep.gate.max_queued},
        "slice": dep.slice.info.as_json() if dep.slice else None,
        "billing": _billing(dep, billed or []),
        "usage": {
            "cpu_percent": round(dep.usage.cpu_percent, 1) if dep.usage else None,
            "cpu_seconds": round(dep.usage.cpu_seconds, 3) if dep.usage else None,
            "memory_bytes": dep.usage.memory_bytes if dep.usage else None,
            "memory_peak_bytes": dep.usage.memory_peak_bytes if dep.usage else None,
            "memory_limit_bytes": dep.tier.memory_bytes,
            "gpu_memory_bytes": dep.usage.gpu_memory_bytes if dep.usage else None,
            "oom_kills": dep.oom_kills,
            "source": dep.usage.source if dep.usage else None,
        },
    }


def _billing(dep: Deployment, billed: list[tuple[int, int, str]]) -> dict[str, Any]:
    """`cost` is what was billed in the configured currency; `costs` has every currency
    this deployment was ever billed in (after a currency change there are two)."""
    costs = money.costs_by_currency(billed)
    return {"billed_seconds": sum(ms for ms, _, _ in billed) / 1000,
            "cost": money.text(costs.get(dep.currency, money.cost(0))),
            "currency": dep.currency,
            "costs": {currency: money.text(amount) for currency, amount in costs.items()},
            "rate_per_hour": str(dep.tier.price_per_hour)}


async def _json(request: web.Request, *deps: Deployment) -> list[dict[str, Any]]:
    totals = await request.app[keys.STORE].billing_totals()
    return [deployment_json(d, totals.get(d.id)) for d in deps]


def _get(request: web.Request) -> Deployment:
    name = request.match_info["name"]
    dep = request.app[keys.SUPERVISOR].get(name)
    if dep is None:
        raise _not_found(name)
    return dep


def _not_found(name: str) -> NotFound:
    return NotFound(f"deployment {name!r} does not exist", code="deployment_not_found")


async def json_body(request: web.Request, model: type[BaseModel]) -> Any:
    _, data = await json_object(request)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        message, param = describe_validation_error(e)
        raise BadRequest(message, code="invalid_value", param=param) from None


async def create_deployment(request: web.Request) -> web.Response:
    body: CreateDeployment = await json_body(request, CreateDeployment)
    if not valid_name(body.name):
        raise BadRequest(f"{body.name!r} is not a valid endpoint name: {NAME_RULE}",
                         code="invalid_name", param="name")
    sup = request.app[keys.SUPERVISOR]
    if body.owner != ADMIN_OWNER and await request.app[keys.STORE].get_user(body.owner) is None:
        raise NotFound(f"owner {body.owner!r} is not a user (POST /api/users makes one)",
                       code="user_not_found", param="owner")
    if (existing := sup.get(body.name)) is not None:
        raise _taken(body.name, existing.deleting)
    resolved = catalog.check_deployable(body.model, body.hardware, request.app[keys.CONFIG])
    try:
        dep = await sup.create(name=body.name, model=resolved.model_id, hardware=body.hardware,
                               owner=body.owner, task=resolved.task)
    except NameTaken:
        raise _taken(body.name) from None
    except InsufficientCapacity as e:
        raise _no_capacity(e) from None
    return web.json_response((await _json(request, dep))[0], status=201)


def _taken(name: str, deleting: bool = False) -> Conflict:
    if deleting:
        return Conflict(f"deployment {name!r} is being deleted; try again in a moment",
                        code="name_taken", param="name")
    return Conflict(f"deployment {name!r} already exists", code="name_taken", param="name")


async def delete_deployment(request: web.Request) -> web.Response:
    dep = _get(request)
    if dep.source == "config":
        raise Conflict(f"deployment {dep.name!r} is defined in config.toml and would come "
                       "back at the next start; remove it there, or stop it "
                       f"(`berth stop {dep.name}`): a stopped deployment stays stopped",
                       code="defined_in_config")
    sup = request.app[keys.SUPERVISOR]
    await _act(dep, sup.delete(dep, request.app[keys.CONFIG].supervisor.drain_timeout_s))
    return web.json_response({**(await _json(request, dep))[0], "status": "deleted"})


async def stop_deployment(request: web.Request) -> web.Response:
    dep = _get(request)
    await _act(dep, request.app[keys.SUPERVISOR].stop(dep))
    return web.json_response((await _json(request, dep))[0])


async def start_deployment(request: web.Request) -> web.Response:
    dep = _get(request)
    await _act(dep, request.app[keys.SUPERVISOR].start_deployment(dep))
    return web.json_response((await _json(request, dep))[0])


async def restart_deployment(request: web.Request) -> web.Response:
    dep = _get(request)
    await _act(dep, request.app[keys.SUPERVISOR].restart(dep))
    return web.json_response((await _json(request, dep))[0])


async def _act(dep: Deployment, action: Any) -> None:
    """Run a lifecycle action; shielded, so a client that hangs up cannot leave it half
    done. A deployment deleted meanwhile is a 404; no room to start it is a 409."""
    try:
        await asyncio.shield(action)
    except LookupError:
        raise _not_found(dep.name) from None
    except InsufficientCapacity as e:
        raise _no_capacity(e) from None


def _no_capacity(e: InsufficientCapacity) -> Conflict | Unprocessable:
    if isinstance(e, NeverFits):
        return Unprocessable(f"this node can never run it: {e}", code="tier_exceeds_node",
                             param="hardware")
    return Conflict(f"not enough free capacity: {e}", code="insufficient_capacity",
                    param="hardware")


async def hardware(request: web.Request) -> web.Response:
    sup = request.app[keys.SUPERVISOR]
    node = sup.node
    cpus, memory, gpus = node.allocated()
    free_cpus, free_memory, free_gpus = node.free()
    return web.json_response({
        "slices": {"driver": sup.slices.name, "enforced": sup.slices.enforced,
                   "reason": sup.slices_reason},
        "capacity": {"cpus": node.cpus, "memory_bytes": node.memory_bytes, "gpus": node.gpus,
                     "cores": list(node.cores), "overcommit": node.overcommit},
        "allocated": {"cpus": cpus, "memory_bytes": memory, "gpus": gpus},
        "free": {"cpus": free_cpus, "memory_bytes": free_memory, "gpus": free_gpus},
        "tiers": [{"name": t.name, "cpus": t.cpus, "memory_bytes": t.memory_bytes,
                   "gpus": t.gpus, "price_per_hour": str(t.price_per_hour),
                   "fits_free": (t.cpus <= free_cpus and t.memory_bytes <= free_memory
                                 and t.gpus <= free_gpus)}
                  for t in sorted(request.app[keys.CONFIG].tiers.values(),
                                  key=lambda t: (t.memory_bytes, t.cpus))],
        "deployments": {name: {"hardware": h.tier.name, "cores": list(h.cores),
                               "cores_shared": h.shared, "gpus": list(h.gpus)}
                        for name, h in sorted(node.holds.items())},
    })


async def list_deployments(request: web.Request) -> web.Response:
    deps = request.app[keys.SUPERVISOR].all()
    return web.json_response({"data": await _json(request, *deps)})


async def get_deployment(request: web.Request) -> web.Response:
    return web.json_response((await _json(request, _get(request)))[0])


async def deployment_events(request: web.Request) -> web.Response:
    dep = _get(request)
    limit = _int_query(request, "limit", 100, 1, 10_000)
    events = await request.app[keys.STORE].events(dep.id, limit)
    return web.json_response({"data": [
        {"at": iso(e.at), "status": e.status, "reason": e.reason, "pid": e.pid}
        for e in events]})


async def deployment_logs(request: web.Request) -> web.Response:
    """The engine's log: the last `tail` lines, or with `offset` the lines written after
    that byte offset (for following); `offset` in the answer is where to go on from."""
    dep = _get(request)
    tail = _int_query(request, "tail", 200, 1, 100_000)
    if "offset" in request.query:
        offset = _int_query(request, "offset", 0, 0, 2**62)
        lines, end = _since(dep.log_path, offset)
    else:
        lines, end = _tail(dep.log_path, tail)
    return web.json_response({"name": dep.name, "lines": lines, "offset": end})


async def healthz(request: web.Request) -> web.Response:
    """Open to anyone, so it says nothing but that the server is up."""
    return web.json_response({"status": "ok"})


async def status(request: web.Request) -> web.Response:
    deps = request.app[keys.SUPERVISOR].all()
    return web.json_response({"status": "ok", "tasks": len(asyncio.all_tasks()),
                              "deployments": {d.name: str(d.state) for d in deps}})


def _int_query(request: web.Request, key: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{key} must be an integer, got {raw!r}", param=key,
                         code="invalid_value") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{key} must be between {lo} and {hi}", param=key,
                         code="invalid_value")
    return value


def _tail(path: os.PathLike[str], lines: int) -> tuple[list[str], int]:
    """The last `lines` lines of a file, reading backwards from its end; and its size."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = end = f.tell()
            block, data = 8192, b""
            while end > 0 and data.count(b"\n") <= lines:
                step = min(block, end)
                end -= step
                f.seek(end)
                data = f.read(step) + data
    except FileNotFoundError:
        return [], 0
    return data.decode("utf-8", "replace").splitlines()[-lines:], size


MAX_FOLLOW_BYTES = 1 << 20


def _since(path: os.PathLike[str], offset: int) -> tuple[list[str], int]:
    """Complete lines written after `offset` (from 0 if the file is now shorter)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if offset > size:  # truncated or replaced: start over
                offset = 0
            f.seek(offset)
            data = f.read(MAX_FOLLOW_BYTES)
    except FileNotFoundError:
        return [], 0
    complete = data[:data.rfind(b"\n") + 1]  # a half-written last line waits
    return complete.decode("utf-8", "replace").splitlines(), offset + len(complete)


async def list_models(request: web.Request) -> web.Response:
    # reads safetensors headers and walks models_dir: off the event loop
    data = await asyncio.to_thread(catalog.catalog_json, request.app[keys.CONFIG])
    return web.json_response({"data": data})
