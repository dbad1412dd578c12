"""How the `berth` command prints: tables, deployments, times, sizes."""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def print_lines(lines: Sequence[str]) -> None:
    if lines:
        sys.stdout.write("".join(f"{line}\n" for line in lines))
        sys.stdout.flush()


def print_deployment(dep: dict[str, Any], url: str) -> None:
    fields = [("name", dep.get("name")), ("model", dep.get("model")),
              ("hardware", dep.get("hardware")), ("owner", dep.get("owner")),
              ("task", dep.get("task")), ("status", dep.get("status")),
              ("reason", dep.get("reason")), ("endpoint", endpoint(dep, url))]
    print("\n".join(f"{k:<9} {cell(v)}" for k, v in fields), flush=True)


def endpoint(dep: dict[str, Any], url: str) -> str:
    return url + str(dep.get("endpoint") or f"/endpoints/{dep.get('name')}/v1")


def status_line(dep: dict[str, Any]) -> str:
    text = f"{dep.get('name')}: {dep.get('status')}"
    if dep.get("reason"):
        text += f" ({dep['reason']})"
    return text


def change_line(dep: dict[str, Any]) -> str:
    parts = [datetime.now().strftime("%H:%M:%S"), f"{dep.get('status')!s:<9}"]
    if dep.get("pid"):
        parts.append(f"pid {dep['pid']}")
    if dep.get("restarts"):
        parts.append(f"restarts {dep['restarts']}")
    if dep.get("reason"):
        parts.append(str(dep["reason"]))
    return "  ".join(parts).rstrip()


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(headers)] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    text = " ".join(str(value).split())  # one line per row, whatever a reason holds
    # names come from API users: no terminal escapes or bidi overrides reach the screen
    return "".join(c if c.isprintable() and unicodedata.category(c) != "Cf"
                   else ascii(c)[1:-1] for c in text)


def yes(value: Any) -> str | None:
    return None if value is None else ("yes" if value else "no")


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def age(created: Any, now: datetime) -> str | None:
    at = parse_time(created)
    if at is None:
        return None
    s = max(0, int((now - at).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def local_time(text: Any) -> str | None:
    at = parse_time(text)
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if at else text


def count(n: Any) -> str | None:
    if not isinstance(n, int | float) or isinstance(n, bool):
        return None
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def bytes(n: Any) -> str | None:
    if not isinstance(n, int | float) or isinstance(n, bool):
        return None
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"

