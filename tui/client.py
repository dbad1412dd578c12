"""An asyncio client of berth's admin API (aiohttp), with typed results and clear errors.

Every failure is an `ApiError` whose message is fit to show as is: the API's own
`error.message` (with its status, code and param), or, for `Disconnected`, what went
wrong on the way (refused, timed out, not a berth server).
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from datetime import datetime
from typing import Any

import aiohttp

from tui import api

log = logging.getLogger(__name__)

class ApiError(Exception):
    """A failed call. `status` is the HTTP status (None: no usable answer)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.param = param


class Disconnected(ApiError):
    """Nothing (or nothing like berth) answered: the caller retries later."""


class AdminClient:
    def __init__(self, url: str, token: str | None, *, timeout: float = 10.0,
                 action_timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        # stop, restart and delete answer once done: a drain can take a while
        self.action_timeout = action_timeout
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the admin API ---------------------------------------------------------------

    async def deployments(self) -> list[api.Deployment]:
        return api.deployments_from_json(await self.get("/api/deployments"))

    async def deployment(self, name: str) -> api.Deployment:
        dep = api.Deployment.from_json(await self.get(f"/api/deployments/{_q(name)}"))
        if dep is None:
            raise Disconnected(f"{self.url} answered without a deployment name")
        return dep

    async def create(self, name: str, model: str, hardware: str) -> api.Deployment:
        answer = await self.request("POST", "/api/deployments",
                                    body={"name": name, "model": model, "hardware": hardware})
        return api.Deployment.from_json(answer) or await self.deployment(name)

    async def delete(self, name: str) -> None:
        await self.request("DELETE", f"/api/deployments/{_q(name)}",
                           limit_s=self.action_timeout)

    async def action(self, name: str, verb: str) -> None:
        """POST /api/deployments/NAME/{stop,start,restart}."""
        if verb not in ("stop", "start", "restart"):
            raise ValueError(verb)
        await self.request("POST", f"/api/deployments/{_q(name)}/{verb}", body={},
                           limit_s=self.action_timeout)

    async def events(self, name: str, limit: int = 50) -> list[api.Event]:
        return api.events_from_json(
            await self.get(f"/api/deployments/{_q(name)}/events", {"limit": limit}))

    async def logs(self, name: str, *, tail: int | None = None,
                   offset: int | None = None) -> api.LogChunk:
        query = {k: v for k, v in (("tail", tail), ("offset", offset)) if v is not None}
        return api.LogChunk.from_json(await self.get(f"/api/deployments/{_q(name)}/logs",
                                                     query))

    async def hardware(self) -> api.Hardware:
        return api.Hardware.from_json(await self.get("/api/hardware"))

    async def models(self) -> list[api.Model]:
        return api.models_from_json(await self.get("/api/models"))

    async def billing(self, *, since: datetime | None = None, until: datetime | None = None,
                      group_by: str = "deployment") -> api.Billing:
        query: dict[str, Any] = {"group_by": group_by}
        if since is not None:
            query["since"] = f"{since.timestamp():.3f}"
        if until is not None:
            query["until"] = f"{until.timestamp():.3f}"
        return api.Billing.from_json(await self.get("/api/billing", query))

    async def usage(self, *, since: float, until: float | None = None, step: int = 1,
                    deployment: str | None = None) -> api.Usage:
        query: dict[str, Any] = {"since": int(since), "step": step}
        if until is not None:
            query["until"] = int(until)
        if deployment is not None:
            query["deployment"] = deployment
        return api.Usage.from_json(await self.get("/api/usage", query))

    # -- plumbing --------------------------------------------------------------------

    async def get(self, path: str, query: dict[str, Any] | None = None) -> Any:
        return await self.request("GET", path, query=query)

    async def request(self, method: str, path: str, *, body: Any = None,
                      query: dict[str, Any] | None = None,
                      limit_s: float | None = None) -> Any:
        session = self._session_now()
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        seconds = limit_s or self.timeout
        limit = aiohttp.ClientTimeout(total=seconds)
        try:
            async with session.request(method, self.url + path, params=query, json=body,
                                       headers=headers, timeout=limit) as resp:
                raw = await resp.read()
                status = resp.status
        except TimeoutError:
            raise Disconnected(f"berth at {self.url} did not answer {method} {path} "
                               f"within {seconds:g} s") from None
        except aiohttp.ClientConnectorError:
            raise Disconnected(f"cannot reach berth at {self.url}") from None
        except (aiohttp.ClientError, ValueError) as e:  # a broken answer, a bad URL
            raise Disconnected(f"{self.url} gave a broken answer to {method} {path} "
                               f"({type(e).__name__})") from None
        if status >= 400:
            raise _api_error(status, raw, bool(self.token))
        if not raw:
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise Disconnected(f"{self.url} answered {method} {path} with something that is "
                               "not JSON: is it a berth server?") from None

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # trust_env off: an HTTP proxy from the environment must not sit in between
            self._session = aiohttp.ClientSession(raise_for_status=False)
        return self._session


def _api_error(status: int, raw: bytes, has_token: bool) -> ApiError:
    """The API's JSON error as an ApiError; anything else is named plainly."""
    try:
        err = json.loads(raw)["error"]
        message = str(err["message"])[:2000]
        code, param = err.get("code"), err.get("param")
    except (ValueError, KeyError, TypeError, RecursionError):
        return ApiError(f"HTTP {status}: the answer is not a berth error", status=status)
    if status == 401 and not has_token:
        message += " (pass --token or set BERTH_TOKEN)"
    return ApiError(message, status=status, code=code if isinstance(code, str) else None,
                    param=param if isinstance(param, str) else None)


def _q(segment: str) -> str:
    """A path segment, quoted: a name with a slash must not reach another route."""
    return urllib.parse.quote(segment, safe="")


async def gather(*calls: Any) -> list[Any]:
    """Run calls together; the first failure is raised once the others are done."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return list(results)
