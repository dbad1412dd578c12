"""Exact money: prices as integer micro-units per hour, costs as Decimal strings.

A cost is computed from an integer numerator (milliseconds x micro-units per hour), so
nothing is lost on the way; it is rounded once, to 1e-9 of the currency, when shown, and
written out in plain digits ("0.000000156", never "1.56E-7"). A table's total is the
rounded sum of every part, the same whichever way the parts are grouped, and the rows are
apportioned to add up to it exactly (each within 1e-9 of its own exact value).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

MICROS = 10**6
_MS_PER_HOUR = 3_600_000
QUANTUM = Decimal("0.000000001")


def rate_micros(price_per_hour: Decimal) -> int:
    """0.033 -> 33000. Prices finer than a micro-unit per hour are refused."""
    micros = price_per_hour * MICROS
    if micros != micros.to_integral_value():
        raise ValueError(f"price {price_per_hour} is finer than 1e-6 per hour")
    return int(micros)


def cost(numerator: int) -> Decimal:
    """The cost of sum(ms x rate_micros_per_hour), rounded to 1e-9."""
    exact = Decimal(numerator) / Decimal(_MS_PER_HOUR * MICROS)
    return exact.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


def price(micros_per_hour: int) -> str:
    return str((Decimal(micros_per_hour) / MICROS).normalize())


def costs_by_currency(billed: list[tuple[int, int, str]]) -> dict[str, Decimal]:
    """{currency: cost} of (ms, rate micro-units per hour, currency) parts; amounts in
    different currencies are never added together."""
    numerators: dict[str, int] = {}
    for ms, rate, currency in billed:
        numerators[currency] = numerators.get(currency, 0) + ms * rate
    return {currency: cost(n) for currency, n in sorted(numerators.items())}


def text(amount: Decimal) -> str:
    """Plain digits, 9 places: "0.000000156", "0.000000000"."""
    return f"{amount.quantize(QUANTUM, rounding=ROUND_HALF_EVEN):f}"


def apportion(numerators: list[int]) -> list[Decimal]:
    """The costs of `numerators`, rounded so they add up exactly to the rounded cost of
    their sum (largest remainders get the spare 1e-9s; ties go to the earlier part)."""
    per_quantum = _MS_PER_HOUR * MICROS // 10**9  # numerator units in 1e-9 of money
    total = int(cost(sum(numerators)) / QUANTUM)
    floors = [n // per_quantum for n in numerators]
    spare = total - sum(floors)
    order = sorted(range(len(numerators)), key=lambda i: -(numerators[i] % per_quantum))
    for i in order[:spare]:
        floors[i] += 1
    return [Decimal(q) * QUANTUM for q in floors]
