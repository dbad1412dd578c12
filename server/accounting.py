"""Per-request accounting: each inference request is recorded once, stream or not.

The router fills a `Record` as the request goes; records are queued in memory and the
meter writes them in its once-a-second transaction, so the hot path never waits on the
database. A request refused before the engine is `rejected` and bills nothing (billing
is by engine time, not by request).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from engines.protocol import USAGE_COMMENT


@dataclass
class Record:
    route: str
    deployment: str | None = None
    deployment_id: int | None = None
    owner: str | None = None
    status: int = 0
    outcome: str = "ok"  # ok | error | rejected | cancelled
    started: float = field(default_factory=time.time)
    _t0: float = field(default_factory=time.monotonic)
    latency_ms: float | None = None
    ttfb_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def first_byte(self) -> None:
        if self.ttfb_ms is None:
            self.ttfb_ms = (time.monotonic() - self._t0) * 1000

    def finish(self, status: int, outcome: str) -> None:
        self.status, self.outcome = status, outcome
        self.latency_ms = (time.monotonic() - self._t0) * 1000

    def usage_from_body(self, body: bytes) -> None:
        try:
            usage = json.loads(body).get("usage") or {}
        except (ValueError, AttributeError):
            return
        self._take(usage)

    def usage_from_chunk(self, chunk: bytes) -> None:
        """The engine ends every stream with an SSE comment carrying the usage."""
        at = chunk.find(USAGE_COMMENT)
        if at < 0:
            return
        line = chunk[at + len(USAGE_COMMENT):].split(b"\n", 1)[0]
        try:
            self._take(json.loads(line))
        except ValueError:
            pass

    def _take(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.prompt_tokens = usage.get("prompt_tokens")
            self.completion_tokens = usage.get("completion_tokens")

    def row(self) -> tuple[Any, ...]:
        return (self.deployment_id, self.deployment, self.owner, self.route, self.status,
                self.outcome, int(self.started * 1000), self.latency_ms, self.ttfb_ms,
                self.prompt_tokens, self.completion_tokens)


class Accounting:
    def __init__(self) -> None:
        self._pending: list[Record] = []

    def add(self, record: Record) -> None:
        self._pending.append(record)

    def take(self) -> list[Record]:
        batch, self._pending = self._pending, []
        return batch
