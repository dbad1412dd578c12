"""A small synchronous client of berth's admin API, for the `berth` command.

Standard library only (urllib), so `berth ls` starts fast: no aiohttp, no httpx. JSON in,
JSON out; every failure is a `ClientError` whose message is fit to print as is:
the API's own `error.message`, or `cannot reach berth at URL ...` when nothing answers.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class ClientError(Exception):
    """A failed call. `status` is the HTTP status (None: no answer at all)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 type: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.type = type
        self.param = param


class Unreachable(ClientError):
    """Nothing answered at the URL (refused, unknown host, timed out)."""


def default_url() -> str:
    return os.environ.get("BERTH_URL") or DEFAULT_URL


class Client:
    def __init__(self, url: str | None = None, token: str | None = None,
                 timeout: float = 30.0, action_timeout: float = 600.0) -> None:
        self.url = (url or default_url()).rstrip("/")
        self.token = token if token is not None else os.environ.get("BERTH_TOKEN") or None
        self.timeout = timeout
        # stop, restart and delete answer once done: a drain and a stop can take a while
        self.action_timeout = action_timeout
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ClientError(f"bad berth URL {self.url!r}: expected http://HOST:PORT")
        # A proxy set in the environment must not swallow calls to a berth on this machine.
        handlers = [urllib.request.ProxyHandler({})] if parsed.hostname in _LOOPBACK else []
        self._opener = urllib.request.build_opener(*handlers)

    # -- the admin API ---------------------------------------------------------------

    def deployments(self) -> list[dict[str, Any]]:
        return list(self.get("/api/deployments")["data"])

    def deployment(self, name: str) -> dict[str, Any]:
        return dict(self.get(f"/api/deployments/{_q(name)}"))

    def create(self, name: str, model: str, hardware: str,
               owner: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "model": model, "hardware": hardware}
        if owner is not None:
            body["owner"] = owner
        return dict(self.request("POST", "/api/deployments", body))

    def delete(self, name: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"/api/deployments/{_q(name)}",
                                 timeout=self.action_timeout))

    def action(self, name: str, verb: str) -> dict[str, Any]:
        """POST /api/deployments/NAME/{stop,start,restart}."""
        return dict(self.request("POST", f"/api/deployments/{_q(name)}/{verb}", {},
                                 timeout=self.action_timeout))

    def events(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        query = {"limit": limit} if limit is not None else None
        return list(self.get(f"/api/deployments/{_q(name)}/events", query)["data"])

    def logs(self, name: str, tail: int | None = None,
             offset: int | None = None) -> dict[str, Any]:
        query = {k: v for k, v in (("tail", tail), ("offset", offset)) if v is not None}
        return dict(self.get(f"/api/deployments/{_q(name)}/logs", query))

    def models(self) -> list[dict[str, Any]]:
        return list(self.get("/api/models")["data"])

    # -- plumbing ----------------------------------------------------------------------

    def get(self, path: str, query: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, query=query)

    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        timeout = self.timeout if timeout is None else timeout
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            with e:
                raise _api_error(e.code, e.reason, e.read(), bool(self.token)) from None
        except urllib.error.URLError as e:
            raise self._unreachable(e.reason, timeout) from None
        except (TimeoutError, ConnectionError) as e:
            raise self._unreachable(e, timeout) from None
        except http.client.HTTPException as e:  # a broken answer: not an HTTP server?
            raise ClientError(f"{self.url} gave a broken answer to {method} {path} "
                              f"({type(e).__name__}): is it a berth server?") from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ClientError(f"{self.url} answered {method} {path} with something that is "
                              "not JSON: is it a berth server?") from None

    def _unreachable(self, why: object, timeout: float) -> Unreachable:
        if isinstance(why, TimeoutError):
            return Unreachable(f"berth at {self.url} did not answer within {timeout:g} s")
        return Unreachable(f"cannot reach berth at {self.url} (is `berth serve` running?)")


def _api_error(status: int, reason: str, raw: bytes, has_token: bool) -> ClientError:
    """The API's JSON error body as a ClientError; a non-JSON answer is named plainly."""
    try:
        err = json.loads(raw)["error"]
        message = str(err["message"])
    except (ValueError, KeyError, TypeError):
        return ClientError(f"HTTP {status} {reason}".strip(), status=status)
    if status == 401 and not has_token:
        message += " (set BERTH_TOKEN or pass --token)"
    return ClientError(message, status=status, code=err.get("code"), type=err.get("type"),
                       param=err.get("param"))


def _q(segment: str) -> str:
    """A path segment, quoted: a name with a slash must not reach another route."""
    return urllib.parse.quote(segment, safe="")
