"""Every route of the server, in one table: app.py registers it, openapi.py documents it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

from engines.protocol import REQUEST_BODIES
from server import accounts, admin, billing, files, metrics, openapi, router, usage_history

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Every inference route of the protocol (chat, completions, embeddings, moderations,
# images, speech); per deployment, the router refuses a route its task does not serve.
_EXPANDS = tuple((path.removeprefix("/v1/"), body) for path, body in REQUEST_BODIES.items())
_INFERENCE = "{route:(" + "|".join(sub for sub, _ in _EXPANDS) + ")}"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    # for a path with a {route:...} pattern: the concrete paths and their bodies
    expands: tuple[tuple[str, type[BaseModel]], ...] = ()


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", admin.healthz, "Server liveness only (open: says nothing else)",
          "server"),
    Route("GET", "/openapi.json", openapi.handler, "This API description", "server"),
    # inference (OpenAI-compatible); `model` is the endpoint name
    Route("GET", "/v1/models", router.list_models, "The endpoints", "inference"),
    Route("GET", "/v1/models/{model}", router.get_model, "One endpoint, by name", "inference"),
    Route("POST", f"/v1/{_INFERENCE}", router.inference, "OpenAI-compatible inference",
          "inference", expands=_EXPANDS),
    Route("GET", "/endpoints/{name}/v1/models", router.list_models, "One endpoint",
          "inference"),
    Route("POST", f"/endpoints/{{name}}/v1/{_INFERENCE}", router.inference,
          "Inference on one endpoint (`model` may be left out)", "inference",
          expands=_EXPANDS),
    Route("GET", "/files/images/{name}", files.image, "A generated image asked for as `url` "
          "(no token: the unguessable name is the capability; 404 once expired)", "files"),
    # admin
    Route("GET", "/api/status", admin.status, "Every deployment's state and the server's "
          "open task count", "admin"),
    Route("GET", "/api/hardware", admin.hardware, "Tiers, node capacity, allocated and free, "
          "and the slice driver", "admin"),
    Route("GET", "/api/models", admin.list_models, "The model catalog, with tier fit and "
          "local presence", "admin"),
    Route("GET", "/api/deployments", admin.list_deployments, "Every deployment", "admin"),
    Route("POST", "/api/deployments", admin.create_deployment, "Create a deployment; its "
          "engine starts in the background", "admin", body=admin.CreateDeployment),
    Route("GET", "/api/deployments/{name}", admin.get_deployment, "One deployment", "admin"),
    Route("DELETE", "/api/deployments/{name}", admin.delete_deployment, "Drain, stop and "
          "delete a deployment (its history is kept)", "admin"),
    Route("POST", "/api/deployments/{name}/stop", admin.stop_deployment, "Stop; it stays "
          "stopped across server restarts", "admin"),
    Route("POST", "/api/deployments/{name}/start", admin.start_deployment, "Start a stopped "
          "or failed deployment", "admin"),
    Route("POST", "/api/deployments/{name}/restart", admin.restart_deployment, "Restart the "
          "engine", "admin"),
    Route("GET", "/api/deployments/{name}/events", admin.deployment_events, "State changes "
          "with times and reasons (?limit=)", "admin"),
    Route("GET", "/api/deployments/{name}/logs", admin.deployment_logs, "The engine's log "
          "(?tail=N, or ?offset=B to follow)", "admin"),
    Route("GET", "/metrics", metrics.handler, "Prometheus metrics of every deployment",
          "admin"),
    Route("GET", "/api/billing", billing.billing, "Billed seconds and cost "
          "(?since=&until=&group_by=deployment|owner|day)", "admin"),
    Route("GET", "/api/usage", usage_history.usage, "Usage series for plots: CPU %, memory, "
          "requests, latency, tokens (?deployment=&since=&until=&step=)", "admin"),
    Route("GET", "/api/users", accounts.list_users, "Every user", "admin"),
    Route("POST", "/api/users", accounts.create_user, "Create a user", "admin",
          body=accounts.CreateUser),
    Route("POST", "/api/users/{user}/keys", accounts.create_key, "A new API key for a user "
          "(shown this once)", "admin", body=accounts.CreateKey),
    Route("GET", "/api/keys", accounts.list_keys, "Every API key (no secrets)", "admin"),
    Route("DELETE", "/api/keys/{id}", accounts.revoke_key, "Revoke a key (at once)", "admin"),
)


def register(app: web.Application) -> None:
    for route in ROUTES:
        if route.method == "GET":  # HEAD too, as HTTP says every GET answers it
            app.router.add_get(route.path, route.handler, allow_head=True)
        else:
            app.router.add_route(route.method, route.path, route.handler)
