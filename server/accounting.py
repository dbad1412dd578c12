"""Per-request accounting: each inference request is recorded once, stream or not.

The router fills a `Record` as the request goes. `Accounting.add` counts it at once in
the in-memory totals that /metrics exports (requests by route and outcome, latency and
time-to-first-byte histograms, tokens) and queues it; the meter writes the queue in its
once-a-second transaction, so the hot path never waits on the database. A request
refused before the engine is `rejected` and bills nothing (billing is by engine time).
"""

from __future__ import annotations

import bisect
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from engines.protocol import USAGE_COMMENT

# Seconds: from a one-token answer on a tiny model to a long generation on a CPU.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 120.0, 300.0)


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
            self.prompt_tokens = _count(usage.get("prompt_tokens"))
            self.completion_tokens = _count(usage.get("completion_tokens"))

    def row(self) -> tuple[Any, ...]:
        return (self.deployment_id, self.deployment, self.owner, self.route, self.status,
                self.outcome, int(self.started * 1000), self.latency_ms, self.ttfb_ms,
                self.prompt_tokens, self.completion_tokens)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


@dataclass
class Histogram:
    """Observations per bucket of LATENCY_BUCKETS (the last slot: above them all)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: (upper bound, observations at or below it), +Inf last."""
        out, running = [], 0
        for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class RequestStats:
    """A deployment's request totals since the server started (Prometheus counters)."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)  # (route, outcome)
    latency: Histogram = field(default_factory=Histogram)
    ttfb: Histogram = field(default_factory=Histogram)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, record: Record) -> None:
        self.requests[record.route, record.outcome] += 1
        if record.latency_ms is not None and record.outcome != "rejected":
            self.latency.observe(record.latency_ms / 1000)
        if record.ttfb_ms is not None:
            self.ttfb.observe(record.ttfb_ms / 1000)
        self.prompt_tokens += record.prompt_tokens or 0
        self.completion_tokens += record.completion_tokens or 0


class Accounting:
    def __init__(self) -> None:
        self._pending: list[Record] = []
        self.stats: dict[int, RequestStats] = {}  # by deployment id
        self.unrouted = 0  # requests for no known deployment (bad body, unknown model)

    def add(self, record: Record) -> None:
        self._pending.append(record)
        if record.deployment_id is None:
            self.unrouted += 1
        else:
            self.stats.setdefault(record.deployment_id, RequestStats()).add(record)

    def take(self) -> list[Record]:
        batch, self._pending = self._pending, []
        return batch
