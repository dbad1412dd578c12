"""GET /api/billing: billed seconds and cost per deployment, owner or day, for a range."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from server import keys, money
from server.errors import BadRequest

DAY_MS = 86_400_000
GROUPS = ("deployment", "owner", "day")


MAX_TIME_S = 253_402_300_799  # 9999-12-31T23:59:59Z: the last second ISO 8601 can write


_UNIX = re.compile(r"[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?", re.ASCII)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


def query_time(request: web.Request, key: str, default: float) -> int:
    """A query time as ms: ISO 8601 (2026-12-03T10:00:00Z) or unix seconds (ASCII digits),
    from 1970 to the year 9999. A bare date is UTC; as `until` it means the end of that
    day, so since=D&until=D is the whole day D."""
    raw = request.query.get(key)
    if raw is None:
        return int(default * 1000)
    if _UNIX.fullmatch(raw):
        seconds = float(raw)
    else:
        try:
            if not raw.isascii():
                raise ValueError(raw)
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            if key == "until" and _DATE.fullmatch(raw):
                parsed += timedelta(days=1)
        except (ValueError, OverflowError):  # OverflowError: the day after 9999-12-31
            raise BadRequest(f"{key}: expected ISO 8601 (2026-12-03T10:00:00Z) or unix "
                             f"seconds, from 1970 to 9999; got {raw!r}", code="invalid_value",
                             param=key) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        seconds = parsed.timestamp()
    if not 0 <= seconds <= MAX_TIME_S:  # NaN fails this too
        raise BadRequest(f"{key}: {raw!r} is out of range: a time from 1970 to 9999 "
                         f"(unix seconds 0..{MAX_TIME_S})", code="invalid_value", param=key)
    return int(seconds * 1000)


def until_before_since(request: web.Request) -> str:
    if "until" in request.query:
        return "until must be after since"
    return "since is in the future (until defaults to now)"


def _pieces(row: dict[str, Any], group_by: str) -> list[tuple[Any, int]]:
    """(group key, ms) for one clipped interval; a `day` split at UTC midnights; a
    deployment is its id (a name deleted and created again is two deployments)."""
    start, end = row["start_ms"], row["end_ms"]
    if group_by == "deployment":
        return [(row["deployment_id"], end - start)]
    if group_by != "day":
        return [(row[group_by], end - start)]
    out = []
    while start < end:
        cut = min(end, (start // DAY_MS + 1) * DAY_MS)
        day = datetime.fromtimestamp(start / 1000, UTC).date().isoformat()
        out.append((day, cut - start))
        start = cut
    return out


def _apportioned(parts: list[dict[str, Any]], currency: str) -> dict[str, Any]:
    """One currency's total, rounded once from the exact sum (so it is the same whichever
    way the rows are grouped), and its rows' costs apportioned to add up to it."""
    mine = [p for p in parts if p["currency"] == currency]
    for part, amount in zip(mine, money.apportion([p["numerator"] for p in mine]),
                            strict=True):
        part["cost"] = amount
    return {"billed_seconds": sum(p["ms"] for p in mine) / 1000,
            "cost": money.text(money.cost(sum(p["numerator"] for p in mine))),
            "currency": currency}


async def billing(request: web.Request) -> web.Response:
    group_by = request.query.get("group_by", "deployment")
    if group_by not in GROUPS:
        raise BadRequest(f"group_by: expected one of {', '.join(GROUPS)}", param="group_by",
                         code="invalid_value")
    since = query_time(request, "since", 0)
    until = query_time(request, "until", time.time())
    if until <= since:
        raise BadRequest(until_before_since(request), param="until", code="invalid_value")
    rows = await request.app[keys.STORE].billing_rows(since_ms=since, until_ms=until)
    ms: dict[tuple[Any, str], int] = defaultdict(int)
    numerator: dict[tuple[Any, str], int] = defaultdict(int)
    about: dict[Any, dict[str, Any]] = {}  # deployment id -> its name and whether deleted
    for row in rows:
        for key, part in _pieces(row, group_by):
            ms[key, row["currency"]] += part
            numerator[key, row["currency"]] += part * row["rate_micros_per_hour"]
        about[row["deployment_id"]] = {"key": row["deployment"],
                                       "deployment_id": row["deployment_id"],
                                       "deleted": bool(row["deleted"])}
    parts = [{"group": key, "currency": cur, "ms": ms[key, cur],
              "numerator": numerator[key, cur]}
             for key, cur in sorted(ms, key=lambda k: (str(k[0]), k[1]))]
    if group_by == "deployment":
        parts.sort(key=lambda p: (about[p["group"]]["key"], p["group"], p["currency"]))
    current = request.app[keys.CONFIG].currency
    # never added across currencies: one total per currency, the configured one first
    currencies = sorted({p["currency"] for p in parts} | {current},
                        key=lambda c: (c != current, c))
    totals = [_apportioned(parts, c) for c in currencies]
    data = [{**(about[p["group"]] if group_by == "deployment" else {"key": p["group"]}),
             "billed_seconds": p["ms"] / 1000, "cost": money.text(p["cost"]),
             "currency": p["currency"]} for p in parts]
    return web.json_response({"data": data, "totals": totals, "total": totals[0],
                              "group_by": group_by, "since_ms": since, "until_ms": until})
