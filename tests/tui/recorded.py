"""Fixed admin API answers, served by a small real aiohttp app in a thread.

Why not the real server here: snapshots compare pixels, and a live server's uptime,
CPU %, memory and cost change every second. These answers have the shapes a real
`berth serve` gave (recorded from one, then fixed in time) so the screens are drawn the
same on every run. Behaviour tests use the real server (see conftest.py).

The server runs in its own thread and loop because `snap_compare` runs the app in an
event loop of its own, synchronously.
"""

from __future__ import annotations

import asyncio
import copy
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

NOW = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC).timestamp()
GiB = 1024**3


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def deployment(name: str, model: str, hardware: str, status: str, *, reason: str | None,
               pid: int | None, ready_s: float | None, cpu: float | None,
               memory: int | None, limit: int, billed_s: float, cost: str, rate: str,
               owner: str = "admin", restarts: int = 0, retry_s: float | None = None,
               other_costs: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name, "model": model, "hardware": hardware, "owner": owner, "source": "api",
        "task": "text", "status": status, "reason": reason, "deleting": False, "pid": pid,
        "restarts": restarts, "created_at": iso(NOW - 7200),
        "ready_at": iso(NOW - ready_s) if ready_s is not None else None,
        "retry_at": iso(NOW + retry_s) if retry_s is not None else None,
        "endpoint": f"/endpoints/{name}/v1",
        "requests": {"active": 0, "queued": 0, "max_concurrent": 4, "max_queued": 32},
        "slice": {"driver": "cgroup-v1", "path": f"berth/{name}", "cpus": [0],
                  "cpus_shared": False, "cpu_quota": 1.0, "memory_limit_bytes": limit,
                  "pids_limit": 4096, "gpus": [], "enforced": True},
        "billing": {"billed_seconds": billed_s, "cost": cost, "currency": "USD",
                    "costs": {"USD": cost, **(other_costs or {})}, "rate_per_hour": rate},
        "usage": {"cpu_percent": cpu, "cpu_seconds": 12.5 if cpu is not None else None,
                  "memory_bytes": memory, "memory_peak_bytes": memory,
                  "memory_limit_bytes": limit, "oom_kills": 1 if reason == "oom_killed" else 0,
                  "source": "cgroup-v1"},
    }


DEPLOYMENTS = [
    deployment("chat", "berth-demo/tiny-random-llama-chat", "micro", "ready",
               reason="health ok", pid=4242, ready_s=3723, cpu=12.5, memory=310 * 1024**2,
               limit=2 * GiB, billed_s=3730.5, cost="0.034196250", rate="0.033"),
    deployment("embed", "sentence-transformers/all-MiniLM-L6-v2", "small", "loading",
               reason="engine answering, loading model", pid=4343, ready_s=None, cpu=95.0,
               memory=180 * 1024**2, limit=4 * GiB, billed_s=12.0, cost="0.000220000",
               rate="0.066", owner="alice"),
    deployment("big-one", "microsoft/phi-2", "medium", "crashed", reason="oom_killed",
               pid=None, ready_s=None, cpu=None, memory=None, limit=8 * GiB, billed_s=95.25,
               cost="0.003492500", rate="0.132", restarts=3, retry_s=12),
    deployment("old", "berth-demo/tiny-random-gpt2-base", "micro", "stopped",
               reason="stopped by request", pid=None, ready_s=None, cpu=None, memory=None,
               limit=2 * GiB, billed_s=600.0, cost="0.005500000", rate="0.033",
               owner="alice", other_costs={"EUR": "0.001200000"}),
]  # `old` was billed in EUR too, on a day before the currency changed to USD


def tier(name: str, cpus: int, memory_gib: int, gpus: int, price: str,
         fits: bool) -> dict[str, Any]:
    return {"name": name, "cpus": cpus, "memory_bytes": memory_gib * GiB, "gpus": gpus,
            "price_per_hour": price, "fits_free": fits}


HARDWARE = {
    "slices": {"driver": "cgroup-v1", "enforced": True, "reason": "cgroup v1"},
    "capacity": {"cpus": 8.0, "memory_bytes": 24 * GiB, "gpus": 0, "cores": list(range(8)),
                 "overcommit": 1.0},
    "allocated": {"cpus": 4, "memory_bytes": 16 * GiB, "gpus": 0},
    "free": {"cpus": 4.0, "memory_bytes": 8 * GiB, "gpus": 0},
    "tiers": [tier("micro", 1, 2, 0, "0.033", True), tier("small", 2, 4, 0, "0.066", True),
              tier("medium", 4, 8, 0, "0.132", True), tier("large", 8, 16, 0, "0.264", False),
              tier("a10", 4, 24, 1, "1.00", False)],
    "deployments": {},
}


def model(model_id: str, task: str, fits: list[str], present: bool,
          memory: int) -> dict[str, Any]:
    return {"id": model_id, "aliases": [], "task": task, "engine": task, "available": True,
            "unavailable_reason": None, "catalog": True, "parameters_approximate": False,
            "trust_remote_code": False, "description": None, "parameters": memory // 4,
            "dtype": "float32", "memory_bytes": memory, "memory_source": "weights",
            "fits": fits, "smallest_tier": fits[0] if fits else None, "present": present,
            "path": None}


ALL_TIERS = ["micro", "small", "medium", "large", "a10"]
MODELS = [
    model("berth-demo/tiny-random-llama-chat", "text", ALL_TIERS, True, 40 * 1024**2),
    model("sentence-transformers/all-MiniLM-L6-v2", "embeddings", ALL_TIERS, True,
          300 * 1024**2),
    model("facebook/opt-125m", "text", ALL_TIERS, False, 900 * 1024**2),
    model("microsoft/phi-2", "text", ["medium", "large", "a10"], False, 7 * GiB),
    model("meta-llama/Meta-Llama-3-8B-Instruct", "text", ["a10"], False, 19 * GiB),
    model("stabilityai/sdxl-turbo", "images", ["large", "a10"], False, 10 * GiB),
]


def billing(rows: list[tuple[str, float, str]], total_cost: str,
            ids: dict[str, tuple[int, bool]] | None = None) -> dict[str, Any]:
    """A /api/billing answer; `ids`: per key, its deployment id and whether deleted (rows
    grouped by deployment carry them; keys like `old#2` name one generation of `old`)."""
    data = []
    for k, s, c in rows:
        row: dict[str, Any] = {"key": k.split("#")[0], "billed_seconds": s, "cost": c,
                               "currency": "USD"}
        if ids is not None:
            row["deployment_id"], row["deleted"] = ids[k]
        data.append(row)
    total = {"billed_seconds": sum(s for _, s, _ in rows), "cost": total_cost,
             "currency": "USD"}
    return {"data": data, "totals": [total], "total": total,
            "group_by": "deployment" if ids is not None else "owner", "since_ms": 0,
            "until_ms": int(NOW * 1000)}


# `old` was deleted and created again today; `quick` was deleted: their rows are marked
BILLING = {
    "deployment": billing([("big-one", 95.25, "0.003492500"), ("chat", 3730.5, "0.034196250"),
                           ("embed", 12.0, "0.000220000"), ("old#2", 300.0, "0.002750000"),
                           ("old", 600.0, "0.005500000"), ("quick", 120.0, "0.001100000")],
                          "0.047258750",
                          ids={"chat": (1, False), "old#2": (2, True), "quick": (3, True),
                               "embed": (5, False), "big-one": (6, False),
                               "old": (7, False)}),
    "owner": billing([("admin", 3945.75, "0.038788750"), ("alice", 912.0, "0.008470000")],
                     "0.047258750"),
}


GAP = range(60, 75)  # buckets missing from the detail's series: the engine was stopped


def usage_points(name: str, step: int, count: int) -> list[dict[str, Any]]:
    """A smooth, fixed series: the last `count` buckets of `step` seconds before NOW,
    less the buckets in GAP (when there are that many)."""
    out = []
    for i in range(count):
        if i in GAP:
            continue
        t = int(NOW) - (count - i) * step
        requests = int(4 + 3 * math.sin(i / 5))
        out.append({"deployment": name, "t": t, "cpu_percent": round(20 + 15 * math.sin(i / 7),
                                                                      2),
                    "memory_bytes": (300 + i) * 1024**2, "memory_max_bytes": (301 + i) * 1024**2,
                    "samples": step, "requests": requests, "errors": 0,
                    "latency_ms_avg": round(40 + 10 * math.cos(i / 4), 3) if requests else None,
                    "prompt_tokens": 10 * requests, "completion_tokens": 20 * requests})
    return out


EVENTS = {"data": [
    {"at": iso(NOW - 7200), "status": "pending", "reason": "created", "pid": None},
    {"at": iso(NOW - 7199), "status": "starting", "reason": "spawn", "pid": 4100},
    {"at": iso(NOW - 7190), "status": "ready", "reason": "health ok", "pid": 4100},
    {"at": iso(NOW - 3730), "status": "crashed", "reason": "oom_killed", "pid": 4100},
    {"at": iso(NOW - 3730), "status": "crashed", "pid": 4100, "reason":
     "engine exited with code -9 (SIGKILL: killed by the kernel for memory, its slice's "
     "limit is 2.0 GiB); restarting in 1 s"},
    {"at": iso(NOW - 3729), "status": "starting", "reason": "restart after backoff",
     "pid": 4242},
    {"at": iso(NOW - 3723), "status": "ready", "reason": "health ok", "pid": 4242},
]}

LOG_LINES = [f"2026-12-04 09:{m:02d}:00,000 INFO [chat pid 4242] engines.text: request "
             f"{m} done in 41 ms" for m in range(40, 60)]


Answer = Callable[[web.Request], Any]


def default_answers() -> dict[str, Any]:
    """path -> JSON, or a function of the request giving the JSON."""
    def usage(request: web.Request) -> Any:
        name = request.query.get("deployment")
        step = int(request.query.get("step", "1"))
        names = [name] if name else [d["name"] for d in DEPLOYMENTS if d["pid"]]
        return {"deployment": name, "step": step, "since": 0, "until": int(NOW),
                "data": [p for n in names for p in usage_points(n, step, 120 if name else 12)]}

    def billing_for(request: web.Request) -> Any:
        return BILLING.get(request.query.get("group_by", "deployment"), BILLING["deployment"])

    def logs(request: web.Request) -> Any:  # the tail, then nothing new
        follow = "offset" in request.query
        return {"name": request.path.split("/")[3], "lines": [] if follow else LOG_LINES,
                "offset": 4096}

    answers: dict[str, Any] = {
        "/api/deployments": {"data": DEPLOYMENTS},
        "/api/hardware": HARDWARE,
        "/api/models": {"data": MODELS},
        "/api/usage": usage,
        "/api/billing": billing_for,
    }
    for d in DEPLOYMENTS:
        answers[f"/api/deployments/{d['name']}"] = d
        answers[f"/api/deployments/{d['name']}/events"] = EVENTS
        answers[f"/api/deployments/{d['name']}/logs"] = logs
    return copy.deepcopy(answers)


class RecordedServer:
    """Serves `answers` (changeable while it runs) on 127.0.0.1 in a thread of its own.

    `stop()` closes the port (the console sees a server gone); `start()` opens it again
    on the same port. Unknown paths are a berth 404."""

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.answers = answers if answers is not None else default_answers()
        self.port = 0
        self.calls: list[tuple[str, str, dict[str, str]]] = []  # method, path, query
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def start(self) -> RecordedServer:
        self._run(self._start())
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self._run(self._runner.cleanup())
            self._runner = None

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.calls.append((request.method, request.path, dict(request.query)))
        answer = self.answers.get(request.path)
        if answer is None:
            return web.json_response({"error": {"message": f"no route {request.path}",
                                                "type": "not_found", "code": "not_found",
                                                "param": None}}, status=404)
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, web.StreamResponse):
            return answer
        if isinstance(answer, bytes | str):  # raw bytes: for answers that are not JSON
            return web.Response(body=answer.encode() if isinstance(answer, str) else answer,
                                content_type="text/html")
        return web.json_response(answer)
