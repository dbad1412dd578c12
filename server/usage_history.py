"""GET /api/usage: usage series for plots (CPU %, memory, requests, tokens).

`?deployment=NAME&since=&until=&step=`: buckets of `step` seconds (1, 60, 3600 or any
multiple of 1 s; `30s`, `5m`, `1h` also read) from the stored 1 s, 1 min or 1 h rows,
whichever is the coarsest that divides the step (it is kept longest). Without `step`
the range picks one that gives at most ~MAX_POINTS points. A bucket with no engine
running (stopped, crashed) is absent, not zero: a gap in the plot.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

from aiohttp import web

from server import keys
from server.billing import query_time, until_before_since
from server.errors import BadRequest, NotFound
from server.store import USAGE_STEPS

MAX_POINTS = 3600  # per deployment per request
DEFAULT_RANGE_S = 15 * 60
_STEP_RE = re.compile(r"^([0-9]+)([smh]?)$", re.ASCII)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600}
_AUTO_STEPS = (1, 5, 15, 60, 300, 900, 3600, 21_600, 86_400)


def parse_step(raw: str) -> int:
    m = _STEP_RE.match(raw.strip())
    step = int(m.group(1)) * _UNIT[m.group(2)] if m else 0
    if not 1 <= step <= 31 * 86_400:
        raise BadRequest(f"step: expected seconds (1..2678400) such as 60, 30s, 5m or 1h; "
                         f"got {raw!r}", code="invalid_value", param="step")
    return step


def source_step(step: int) -> int:
    """The coarsest stored resolution that divides `step`."""
    return max(s for s in USAGE_STEPS if step % s == 0)


def point(row: dict[str, Any]) -> dict[str, Any]:
    samples, requests, gpu = row["samples"], row["requests"], row["gpu_samples"]
    return {
        "deployment": row["deployment"],
        "deployment_id": row["deployment_id"],
        "t": row["t"],
        "cpu_percent": round(row["cpu_percent_sum"] / samples, 2) if samples else None,
        "memory_bytes": row["memory_bytes_sum"] // samples if samples else None,
        "memory_max_bytes": row["memory_bytes_max"] if samples else None,
        "gpu_memory_bytes": row["gpu_memory_bytes_sum"] // gpu if gpu else None,
        "gpu_memory_max_bytes": row["gpu_memory_bytes_max"] if gpu else None,
        "samples": samples,
        "requests": requests,
        "errors": row["errors"],
        "latency_ms_avg": round(row["latency_ms_sum"] / requests, 3) if requests else None,
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
    }


async def usage(request: web.Request) -> web.Response:
    now = time.time()
    until = math.ceil(query_time(request, "until", now) / 1000)
    since = query_time(request, "since", until - DEFAULT_RANGE_S) // 1000
    if until <= since:
        raise BadRequest(until_before_since(request), code="invalid_value", param="until")
    raw_step = request.query.get("step")
    if raw_step is not None:
        step = parse_step(raw_step)
    else:  # the finest step that fits; whole days for ranges of years
        step = next((s for s in _AUTO_STEPS if (until - since) / s <= MAX_POINTS),
                    math.ceil((until - since) / (MAX_POINTS - 1) / 86_400) * 86_400)
    since -= since % step  # whole buckets
    if (until - since) / step > MAX_POINTS:
        raise BadRequest(f"{math.ceil((until - since) / step)} points of {step} s; at most "
                         f"{MAX_POINTS}: use a larger step or a shorter range",
                         code="too_many_points", param="step")
    name = request.query.get("deployment") or None
    store = request.app[keys.STORE]
    dep_id = None
    if name is not None:  # the newest one of that name: an older, deleted one is not it
        row = await store.get_deployment_any(name)
        if row is None:
            raise NotFound(f"no deployment named {name!r}, now or in the past",
                           code="deployment_not_found", param="deployment")
        dep_id = row.id
    rows = await store.usage_series(step=step, source_step=source_step(step), since_s=since,
                                    until_s=until, deployment_id=dep_id)
    return web.json_response({"deployment": name, "step": step, "since": since,
                              "until": until, "data": [point(r) for r in rows]})
