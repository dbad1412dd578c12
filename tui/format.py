"""How numbers, money, sizes and times read on screen. Pure functions of typed values."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal

DASH = "-"
MiB = 1024**2
GiB = 1024**3


def size(n: int | None) -> str:
    if n is None or n < 0:
        return DASH
    if n >= GiB:
        return f"{n / GiB:.1f} GiB"
    if n >= MiB:
        return f"{n / MiB:.0f} MiB"
    return f"{n / 1024:.0f} KiB"


def used_of(used: int | None, limit: int | None) -> str:
    if used is None and limit is None:
        return DASH
    return f"{size(used)} / {size(limit)}"


def percent(p: float | None) -> str:
    return DASH if p is None else f"{p:.1f}%"


def cpus(n: float | None) -> str:
    return DASH if n is None else f"{n:g}"


def money(amount: Decimal | None, currency: str | None = None, places: int = 4) -> str:
    if amount is None:
        return DASH
    quantum = Decimal(1).scaleb(-places)
    try:
        text = f"{amount.quantize(quantum):,}"
    except ArithmeticError:  # too large to quantize: show it as sent
        text = str(amount)
    return f"{text} {currency}" if currency else text


def moneys(amounts: Iterable[tuple[Decimal, str | None]], places: int = 4) -> str:
    """Amounts in several currencies, side by side (never summed): `0.0007 USD + 0.0001
    EUR`; a dash for none."""
    return " + ".join(money(amount, currency, places) for amount, currency in amounts) or DASH


def per_hour(rate: Decimal | None) -> str:
    return DASH if rate is None else f"{money(rate, None, 3)}/h"


def money_places(amounts: Iterable[Decimal | None], least: int = 2, most: int = 12) -> int:
    """Decimal places that show every amount exactly (so shown parts add up to a shown
    total), at least `least`, at most `most`."""
    places = least
    for amount in amounts:
        if amount is not None and amount.is_finite():
            exponent = amount.normalize().as_tuple().exponent
            if isinstance(exponent, int):
                places = max(places, -exponent)
    return min(places, most)


def billed(seconds: float | None) -> str:
    """Billed time to the millisecond (what the meter counts): h:mm:ss.mmm, hours
    unbounded, so billed times read (and add up) the same everywhere."""
    if seconds is None or seconds < 0 or not math.isfinite(seconds):
        return DASH
    return billed_ms(round(seconds * 1000))


def billed_ms(ms: int) -> str:
    s, ms = divmod(ms, 1000)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}.{ms:03d}"


def retry_in(retry_at: datetime | None, now: float, short: bool = False) -> str | None:
    """`retrying in 12 s` for a crashed deployment waiting out its backoff, counted from
    the server's `retry_at` and the local clock; None when no retry is due. `short`:
    `retry in 12 s`, for the table's STATUS column."""
    if retry_at is None:
        return None
    left = math.ceil(retry_at.timestamp() - now)
    word = "retry" if short else "retrying"
    return f"{word} in {left} s" if left > 0 else f"{word} now"


def duration(seconds: float | None) -> str:
    """3s, 4m05s, 2h03m, 5d04h."""
    if seconds is None or seconds < 0:
        return DASH
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86_400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86_400}d{s % 86_400 // 3600:02d}h"


def uptime(ready_at: datetime | None, status: str, now: float) -> str:
    if status != "ready" or ready_at is None:
        return DASH
    return duration(now - ready_at.timestamp())


def clock(at: datetime | None) -> str:
    """A time of day in UTC, the zone billing days are cut in."""
    if at is None:
        return DASH
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def clock_short(at: datetime | None) -> str:
    """A recent time in UTC, the year left out: `12-04 09:58:00Z`."""
    if at is None:
        return DASH
    return at.astimezone(UTC).strftime("%m-%d %H:%M:%SZ")


def clock_now(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%H:%M:%SZ")


def rate(per_second: float | None) -> str:
    if per_second is None:
        return DASH
    return f"{per_second:.2f}" if per_second < 100 else f"{per_second:.0f}"


STATUS_STYLE = {  # status -> theme variable of its colour
    "ready": "text-success",
    "pending": "text-warning", "starting": "text-warning", "loading": "text-warning",
    "stopping": "text-warning",
    "crashed": "text-error", "failed": "text-error",
    "stopped": "foreground-muted", "deleted": "foreground-muted",
}
