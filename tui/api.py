"""Typed results of the admin API, read defensively.

Whatever a server sends (a missing field, a number as a string, `null`, an HTML page
where JSON was expected), `from_json` returns a well-typed object: a field of the wrong
type reads as None (or an empty list), never as an exception later in a widget. The
field names follow the admin API's JSON (DESIGN.md: "A deployment as JSON").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any


class Reader:
    """Typed reads from a JSON object that may be anything."""

    def __init__(self, data: Any) -> None:
        self.data: dict[str, Any] = data if isinstance(data, dict) else {}

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        return value if isinstance(value, str) else None

    def number(self, key: str) -> float | None:
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        number = float(value)
        return number if math.isfinite(number) else None

    def integer(self, key: str) -> int | None:
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return value

    def flag(self, key: str) -> bool:
        return self.data.get(key) is True

    def money(self, key: str) -> Decimal | None:
        """Money travels as a decimal string ("0.000917")."""
        value = self.data.get(key)
        if not isinstance(value, str) or len(value) > 64:
            return None
        try:
            amount = Decimal(value)
        except InvalidOperation:
            return None
        return amount if amount.is_finite() else None

    def money_by_key(self, key: str) -> dict[str, Decimal]:
        """An object of decimal strings (`{"USD": "0.0007", "EUR": "0"}`); entries that
        are not money are left out."""
        inner = self.obj(key)
        out = {}
        for name in inner.data:
            amount = inner.money(name)
            if isinstance(name, str) and amount is not None:
                out[name] = amount
        return out

    def time(self, key: str) -> datetime | None:
        """An ISO 8601 time ("2026-12-03T10:00:00.000Z"), as an aware datetime."""
        value = self.text(key)
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    def obj(self, key: str) -> Reader:
        return Reader(self.data.get(key))

    def objects(self, key: str) -> list[Reader]:
        value = self.data.get(key)
        return [Reader(v) for v in value if isinstance(v, dict)] if isinstance(value, list) else []

    def strings(self, key: str) -> list[str]:
        value = self.data.get(key)
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


@dataclass(frozen=True)
class Deployment:
    name: str
    model: str | None
    hardware: str | None
    owner: str | None
    status: str
    reason: str | None
    pid: int | None
    restarts: int | None
    created_at: datetime | None
    ready_at: datetime | None
    retry_at: datetime | None  # crashed, waiting out its backoff: restarts at this time
    cpu_percent: float | None
    memory_bytes: int | None
    memory_limit_bytes: int | None
    billed_seconds: float | None
    cost: Decimal | None
    currency: str | None
    rate_per_hour: Decimal | None
    deleting: bool
    raw: dict[str, Any] = field(repr=False, compare=False)
    # every currency it was billed in (after a currency change, more than one)
    costs: dict[str, Decimal] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> Deployment | None:
        """None for an entry without a name: it cannot be shown or acted on."""
        r = Reader(data)
        name = r.text("name")
        if not name:
            return None
        usage, billing = r.obj("usage"), r.obj("billing")
        return cls(
            name=name, model=r.text("model"), hardware=r.text("hardware"), owner=r.text("owner"),
            status=r.text("status") or "unknown", reason=r.text("reason"), pid=r.integer("pid"),
            restarts=r.integer("restarts"), created_at=r.time("created_at"),
            ready_at=r.time("ready_at"), retry_at=r.time("retry_at"),
            cpu_percent=usage.number("cpu_percent"),
            memory_bytes=usage.integer("memory_bytes"),
            memory_limit_bytes=usage.integer("memory_limit_bytes"),
            billed_seconds=billing.number("billed_seconds"), cost=billing.money("cost"),
            currency=billing.text("currency"), rate_per_hour=billing.money("rate_per_hour"),
            deleting=r.flag("deleting"), raw=r.data, costs=billing.money_by_key("costs"))

    @property
    def all_costs(self) -> list[tuple[Decimal, str | None]]:
        """(amount, currency) for each currency billed: `cost` in the configured one
        first (even at 0), then any other with a non-zero amount; never added up. Just
        `cost` where the server sends no `costs`."""
        out: list[tuple[Decimal, str | None]] = []
        if self.cost is not None:
            out.append((self.cost, self.currency))
        elif self.currency in self.costs:
            out.append((self.costs[self.currency], self.currency))
        out += [(amount, currency) for currency, amount in sorted(self.costs.items())
                if currency != self.currency and amount != 0]
        return out

    @property
    def startable(self) -> bool:
        """`s` starts these and stops the others."""
        return self.status in ("stopped", "failed")


def deployments_from_json(data: Any) -> list[Deployment]:
    found = (Deployment.from_json(d.data) for d in Reader(data).objects("data"))
    seen: set[str] = set()
    out = []
    for dep in found:
        if dep is not None and dep.name not in seen:  # a row key must be unique
            seen.add(dep.name)
            out.append(dep)
    return out


@dataclass(frozen=True)
class Resources:
    cpus: float | None
    memory_bytes: int | None
    gpus: int | None

    @classmethod
    def from_json(cls, r: Reader) -> Resources:
        return cls(cpus=r.number("cpus"), memory_bytes=r.integer("memory_bytes"),
                   gpus=r.integer("gpus"))


@dataclass(frozen=True)
class Tier:
    name: str
    cpus: float | None
    memory_bytes: int | None
    gpus: int | None
    price_per_hour: Decimal | None
    fits_free: bool


@dataclass(frozen=True)
class Hardware:
    capacity: Resources
    allocated: Resources
    free: Resources
    tiers: list[Tier]
    slice_driver: str | None

    @classmethod
    def from_json(cls, data: Any) -> Hardware:
        r = Reader(data)
        tiers = [Tier(name=t.text("name") or "?", cpus=t.number("cpus"),
                      memory_bytes=t.integer("memory_bytes"), gpus=t.integer("gpus"),
                      price_per_hour=t.money("price_per_hour"), fits_free=t.flag("fits_free"))
                 for t in r.objects("tiers") if t.text("name")]
        return cls(capacity=Resources.from_json(r.obj("capacity")),
                   allocated=Resources.from_json(r.obj("allocated")),
                   free=Resources.from_json(r.obj("free")), tiers=tiers,
                   slice_driver=r.obj("slices").text("driver"))


@dataclass(frozen=True)
class Model:
    id: str
    task: str | None
    fits: list[str]
    present: bool
    available: bool
    memory_bytes: int | None
    unavailable_reason: str | None

    @classmethod
    def from_json(cls, r: Reader) -> Model | None:
        model_id = r.text("id")
        if not model_id:
            return None
        return cls(id=model_id, task=r.text("task"), fits=r.strings("fits"),
                   present=r.flag("present"), available=r.flag("available"),
                   memory_bytes=r.integer("memory_bytes"),
                   unavailable_reason=r.text("unavailable_reason"))


def models_from_json(data: Any) -> list[Model]:
    return [m for m in (Model.from_json(r) for r in Reader(data).objects("data")) if m]


@dataclass(frozen=True)
class BillingRow:
    key: str
    billed_seconds: float | None
    cost: Decimal | None
    currency: str | None
    # grouped by deployment: which one (a name deleted and created again is two)
    deployment_id: int | None = None
    deleted: bool = False

    @classmethod
    def from_json(cls, r: Reader) -> BillingRow:
        return cls(key=r.text("key") or "?", billed_seconds=r.number("billed_seconds"),
                   cost=r.money("cost"), currency=r.text("currency"),
                   deployment_id=r.integer("deployment_id"), deleted=r.flag("deleted"))

    @property
    def label(self) -> str:
        """The key, and for a deleted deployment that it is one (`quick (deleted #3)`,
        as the CLI says): its name may belong to a newer deployment now."""
        if not self.deleted:
            return self.key
        number = f" #{self.deployment_id}" if self.deployment_id is not None else ""
        return f"{self.key} (deleted{number})"


@dataclass(frozen=True)
class Billing:
    rows: list[BillingRow]
    totals: list[BillingRow]  # one per currency, as the server sent them

    @classmethod
    def from_json(cls, data: Any) -> Billing:
        """`totals` per currency (a list of rows, or an object keyed by currency), or the
        older single `total`; a `total` whose currency is not one currency ("mixed") is no
        total of anything that can be shown, so it is left out."""
        r = Reader(data)
        totals: list[BillingRow] = []
        raw = r.data.get("totals")
        if isinstance(raw, list):
            totals = [BillingRow.from_json(t) for t in r.objects("totals")]
        elif isinstance(raw, dict):
            for currency, value in raw.items():
                t = Reader(value if isinstance(value, dict) else {"cost": value})
                totals.append(BillingRow(key="TOTAL", billed_seconds=t.number("billed_seconds"),
                                         cost=t.money("cost"),
                                         currency=t.text("currency") or str(currency)))
        elif isinstance(r.data.get("total"), dict):
            total = BillingRow.from_json(r.obj("total"))
            if total.currency != "mixed":
                totals = [total]
        totals = [BillingRow("TOTAL", t.billed_seconds, t.cost, t.currency) for t in totals]
        return cls(rows=[BillingRow.from_json(row) for row in r.objects("data")],
                   totals=totals)

    def total_by_currency(self) -> list[BillingRow]:
        """One TOTAL per currency, each the exact sum of that currency's rows: never a
        sum across currencies. The server's total stands in for a currency whose rows
        cannot all be read (or when there are no rows)."""
        currencies = sorted({row.currency or "" for row in self.rows})
        sent = {t.currency or "": t for t in self.totals}
        out = []
        for currency in currencies:
            rows = [row for row in self.rows if (row.currency or "") == currency]
            costs = [row.cost for row in rows]
            seconds = [row.billed_seconds for row in rows]
            fallback = sent.get(currency)
            cost = (sum((c for c in costs if c is not None), Decimal(0))
                    if None not in costs else fallback.cost if fallback else None)
            billed = (sum(round(s * 1000) for s in seconds if s is not None) / 1000
                      if None not in seconds
                      else fallback.billed_seconds if fallback else None)
            out.append(BillingRow("TOTAL", billed, cost, currency or None))
        if not self.rows:
            out = list(self.totals)
        return out


@dataclass(frozen=True)
class UsagePoint:
    deployment: str | None
    t: float
    cpu_percent: float | None
    memory_bytes: int | None
    requests: int
    errors: int
    latency_ms_avg: float | None


@dataclass(frozen=True)
class Usage:
    step: int
    points: list[UsagePoint]

    @classmethod
    def from_json(cls, data: Any) -> Usage:
        r = Reader(data)
        points = [UsagePoint(deployment=p.text("deployment"), t=t, cpu_percent=p.number(
                      "cpu_percent"), memory_bytes=p.integer("memory_bytes"),
                      requests=p.integer("requests") or 0, errors=p.integer("errors") or 0,
                      latency_ms_avg=p.number("latency_ms_avg"))
                  for p in r.objects("data") if (t := p.number("t")) is not None]
        step = r.integer("step")
        return cls(step=step if step and step > 0 else 1, points=points)


@dataclass(frozen=True)
class Event:
    at: datetime | None
    status: str | None
    reason: str | None
    pid: int | None


def events_from_json(data: Any) -> list[Event]:
    return [Event(at=e.time("at"), status=e.text("status"), reason=e.text("reason"),
                  pid=e.integer("pid")) for e in Reader(data).objects("data")]


@dataclass(frozen=True)
class LogChunk:
    lines: list[str]
    offset: int | None

    @classmethod
    def from_json(cls, data: Any) -> LogChunk:
        r = Reader(data)
        return cls(lines=r.strings("lines"), offset=r.integer("offset"))
