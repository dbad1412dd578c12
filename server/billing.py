"""GET /api/billing: billed seconds and cost per deployment, owner or day, for a range."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from server import keys, money
from server.errors import BadRequest

DAY_MS = 86_400_000
GROUPS = ("deployment", "owner", "day")


def query_time(request: web.Request, key: str, default: float) -> int:
    """A query time as ms: ISO 8601 (2026-12-03T10:00:00Z) or unix seconds."""
    raw = request.query.get(key)
    if raw is None:
        return int(default * 1000)
    try:
        return int(float(raw) * 1000)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{key}: expected ISO 8601 or unix seconds, got {raw!r}",
                         code="invalid_value", param=key) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _pieces(row: dict[str, Any], group_by: str) -> list[tuple[str, int]]:
    """(group key, ms) for one clipped interval; a `day` split at UTC midnights."""
    start, end = row["start_ms"], row["end_ms"]
    if group_by != "day":
        return [(row[group_by], end - start)]
    out = []
    while start < end:
        cut = min(end, (start // DAY_MS + 1) * DAY_MS)
        day = datetime.fromtimestamp(start / 1000, UTC).date().isoformat()
        out.append((day, cut - start))
        start = cut
    return out


async def billing(request: web.Request) -> web.Response:
    group_by = request.query.get("group_by", "deployment")
    if group_by not in GROUPS:
        raise BadRequest(f"group_by: expected one of {', '.join(GROUPS)}", param="group_by",
                         code="invalid_value")
    since = query_time(request, "since", 0)
    until = query_time(request, "until", time.time())
    if until < since:
        raise BadRequest("until is before since", param="until", code="invalid_value")
    rows = await request.app[keys.STORE].billing_rows(since_ms=since, until_ms=until)
    ms: dict[tuple[str, str], int] = defaultdict(int)
    numerator: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        for key, part in _pieces(row, group_by):
            ms[key, row["currency"]] += part
            numerator[key, row["currency"]] += part * row["rate_micros_per_hour"]
    costs = {group: money.cost(numerator[group]) for group in sorted(ms)}
    data = [{"key": key, "billed_seconds": ms[key, cur] / 1000, "cost": str(costs[key, cur]),
             "currency": cur} for key, cur in costs]
    currencies = sorted({cur for _, cur in costs}) or [request.app[keys.CONFIG].currency]
    total = {"billed_seconds": sum(ms.values()) / 1000,
             # the sum of the shown parts: the table adds up to the last digit
             "cost": str(sum(costs.values(), Decimal(0))),
             "currency": currencies[0] if len(currencies) == 1 else "mixed"}
    return web.json_response({"data": data, "total": total, "group_by": group_by,
                              "since_ms": since, "until_ms": until})
