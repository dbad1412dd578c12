"""GET /metrics: every deployment's state, usage, billing and admission, for Prometheus.

Built afresh per scrape from the supervisor's handles and the store's billing totals
(a registry per request: no global one, nothing kept between scrapes). Costs are floats
here; the exact Decimal money stays in the admin API. Request counts, latency and
time-to-first-byte histograms and token counts come from the router's accounting, kept
in memory since the server started (counters reset with it, as Prometheus expects).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from server import keys, money
from server.accounting import Accounting, RequestStats
from server.deployment import Deployment
from server.states import State

LABELS = ("deployment", "owner", "hardware")


class _Families:
    """A collector that hands out families built beforehand (collect() must not await)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def families(deps: list[Deployment], billed: dict[int, list[tuple[int, int, str]]],
             accounting: Accounting | None = None) -> list[Metric]:
    stats = accounting.stats if accounting is not None else {}
    return [*_deployment_families(deps, billed), *_request_families(deps, stats, accounting)]


def _deployment_families(deps: list[Deployment],
                         billed: dict[int, list[tuple[int, int, str]]]) -> list[Metric]:
    def gauge(name: str, doc: str, *extra: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=[*LABELS, *extra])

    def counter(name: str, doc: str, *extra: str) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, labels=[*LABELS, *extra])

    state = gauge("berth_deployment_state", "1 for the deployment's current state", "state")
    restarts = counter("berth_deployment_restarts", "Engine restarts")
    ooms = counter("berth_deployment_oom_kills", "Engines killed for the memory limit")
    cpu_seconds = counter("berth_deployment_cpu_seconds",
                          "CPU seconds of the current engine (resets when it restarts)")
    cpu_percent = gauge("berth_deployment_cpu_percent", "CPU % between the last two readings")
    memory = gauge("berth_deployment_memory_bytes", "Memory in use")
    limit = gauge("berth_deployment_memory_limit_bytes", "Memory limit of the hardware tier")
    gpu_memory = gauge("berth_deployment_gpu_memory_bytes",
                       "GPU memory the engine's processes hold (GPU tiers, where NVML reads)")
    billed_s = counter("berth_deployment_billed_seconds", "Seconds billed, all time")
    cost = counter("berth_deployment_cost", "Cost billed, all time (a float: the exact "
                   "amount is in /api/billing)", "currency")
    active = gauge("berth_deployment_requests_active", "Requests holding an engine slot")
    queued = gauge("berth_deployment_requests_queued", "Requests waiting for a slot")
    for dep in deps:
        labels = [dep.name, dep.owner, dep.tier.name]
        for s in State:
            state.add_metric([*labels, str(s)], 1.0 if dep.state is s else 0.0)
        restarts.add_metric(labels, dep.restarts)
        ooms.add_metric(labels, dep.oom_kills)
        if dep.usage is not None:
            cpu_seconds.add_metric(labels, dep.usage.cpu_seconds)
            cpu_percent.add_metric(labels, dep.usage.cpu_percent)
            memory.add_metric(labels, dep.usage.memory_bytes)
            if dep.usage.gpu_memory_bytes is not None:
                gpu_memory.add_metric(labels, dep.usage.gpu_memory_bytes)
        limit.add_metric(labels, dep.tier.memory_bytes)
        parts = billed.get(dep.id, [])
        billed_s.add_metric(labels, sum(ms for ms, _, _ in parts) / 1000)
        for currency, amount in money.costs_by_currency(parts).items():
            cost.add_metric([*labels, currency], float(amount))
        active.add_metric(labels, dep.gate.active)
        queued.add_metric(labels, dep.gate.waiting)
    return [state, restarts, ooms, cpu_seconds, cpu_percent, memory, limit, gpu_memory,
            billed_s, cost, active, queued]


def _request_families(deps: list[Deployment], stats: dict[int, RequestStats],
                     accounting: Accounting | None) -> list[Metric]:
    requests = CounterMetricFamily("berth_requests", "Inference requests by route and "
                                   "outcome (ok, error, rejected, cancelled)",
                                   labels=[*LABELS, "route", "outcome"])
    latency = HistogramMetricFamily("berth_request_duration_seconds", "Time from request "
                                    "to the answer's end (rejected requests left out)",
                                    labels=list(LABELS))
    ttfb = HistogramMetricFamily("berth_request_ttfb_seconds", "Time to the answer's first "
                                 "byte", labels=list(LABELS))
    tokens = CounterMetricFamily("berth_tokens", "Tokens the engines reported",
                                 labels=[*LABELS, "kind"])
    unrouted = CounterMetricFamily("berth_requests_unrouted", "Inference requests refused "
                                   "before an endpoint was known (bad body, unknown model)")
    unrouted.add_metric([], accounting.unrouted if accounting is not None else 0)
    for dep in deps:
        s = stats.get(dep.id)
        if s is None:
            continue
        labels = [dep.name, dep.owner, dep.tier.name]
        for (route, outcome), n in sorted(s.requests.items()):
            requests.add_metric([*labels, route, outcome], n)
        latency.add_metric(labels, s.latency.cumulative(), s.latency.total)
        ttfb.add_metric(labels, s.ttfb.cumulative(), s.ttfb.total)
        tokens.add_metric([*labels, "prompt"], s.prompt_tokens)
        tokens.add_metric([*labels, "completion"], s.completion_tokens)
    return [requests, latency, ttfb, tokens, unrouted]


async def handler(request: web.Request) -> web.Response:
    deps = request.app[keys.SUPERVISOR].all()
    billed = await request.app[keys.STORE].billing_totals()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families(deps, billed, request.app[keys.ACCOUNTING])))
    return web.Response(body=generate_latest(registry),
                        headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})
