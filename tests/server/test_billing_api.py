"""GET /api/billing, /api/usage, the deployment JSON and /metrics over a ledger made
by a real Store: currencies are never added together, a name deleted and created again
is two deployments, and times out of range are a 400."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server import money
from server.app import create_app
from server.auth import TOKEN_ENV
from server.config import load_config
from server.store import Store
from tests.helpers import ADMIN_TOKEN, AUTH, write_config

T0 = 1_790_000_000  # Sep 2026, in whole seconds
RATE = 36_000  # 0.036 per hour


async def _ledger(path) -> tuple[int, int]:
    """An old `chat` (deleted; billed in USD) and the new `chat` (stopped; billed 3 s in
    USD, then 2 s in EUR after the currency changed), each with one usage second."""
    store = await Store.open(path)
    try:
        ids = []
        for start, parts in ((T0, [("USD", 10_000)]),
                             (T0 + 100, [("USD", 3_000), ("EUR", 2_000)])):
            row = await store.create_deployment(name="chat", model="m", hardware="micro",
                                                owner="admin", task=None, status="stopped")
            await store.set_desired(row.id, "stopped")
            at = start * 1000
            for currency, ms in parts:
                interval = await store.open_interval(
                    deployment_id=row.id, deployment="chat", owner="admin", hardware="micro",
                    pid=1, rate_micros_per_hour=RATE, currency=currency, start_ms=at)
                await store.record_second(ends={interval: at + ms}, requests=[], usage={
                    (row.id, at // 1000): (1, 10.0 * (len(ids) + 1), 100, 100, 0, 0, 0.0,
                                           0, 0, 0, 0, 0)})
                at += ms
            ids.append(row.id)
            if len(ids) == 1:
                await store.mark_deleted(row.id)
        return ids[0], ids[1]
    finally:
        await store.close()


@pytest.fixture
async def api(aiohttp_client, tmp_path, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, ADMIN_TOKEN)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    old, new = await _ledger(state / "berth.db")
    path = write_config(tmp_path / "config.toml", state_dir=state,
                        models_dir=tmp_path / "models")
    path.write_text(path.read_text() + '\n[billing]\ncurrency = "EUR"\n')
    client = await aiohttp_client(create_app(load_config(path)), headers=AUTH)
    client.ids = (old, new)
    return client


async def test_totals_are_per_currency_and_never_mixed(api) -> None:
    body = await (await api.get("/api/billing", params={"group_by": "owner"})).json()
    assert [(d["key"], d["currency"], d["billed_seconds"], d["cost"]) for d in body["data"]] == [
        ("admin", "EUR", 2.0, money.text(money.cost(2_000 * RATE))),
        ("admin", "USD", 13.0, money.text(money.cost(13_000 * RATE)))]
    assert body["totals"] == [  # the configured currency first
        {"currency": "EUR", "billed_seconds": 2.0, "cost": money.text(money.cost(2_000 * RATE))},
        {"currency": "USD", "billed_seconds": 13.0, "cost": money.text(money.cost(13_000 * RATE))}]
    assert body["total"] == body["totals"][0]


async def test_a_name_deleted_and_created_again_is_two_deployments(api) -> None:
    old, new = api.ids
    body = await (await api.get("/api/billing")).json()
    rows = [(d["key"], d["deployment_id"], d["deleted"], d["currency"], d["billed_seconds"])
            for d in body["data"]]
    assert rows == [("chat", old, True, "USD", 10.0), ("chat", new, False, "EUR", 2.0),
                    ("chat", new, False, "USD", 3.0)]
    # the usage of a name is the newest deployment's only
    usage = await (await api.get("/api/usage", params={
        "deployment": "chat", "since": str(T0), "until": str(T0 + 200), "step": "1"})).json()
    assert {p["deployment_id"] for p in usage["data"]} == {new}
    assert [p["cpu_percent"] for p in usage["data"]] == [20.0, 20.0]


async def test_the_deployment_json_and_metrics_carry_each_currency(api) -> None:
    billing = (await (await api.get("/api/deployments/chat")).json())["billing"]
    assert billing["currency"] == "EUR"
    assert billing["cost"] == money.text(money.cost(2_000 * RATE))  # the configured currency's
    assert billing["costs"] == {"EUR": money.text(money.cost(2_000 * RATE)),
                                "USD": money.text(money.cost(3_000 * RATE))}
    assert billing["billed_seconds"] == 5.0
    text = await (await api.get("/metrics")).text()
    costs = {s.labels["currency"]: s.value
             for f in text_string_to_metric_families(text) for s in f.samples
             if s.name == "berth_deployment_cost_total" and s.labels["deployment"] == "chat"}
    assert costs == {"EUR": float(money.cost(2_000 * RATE)),
                     "USD": float(money.cost(3_000 * RATE))}
    assert Decimal(billing["cost"]) > 0


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e20", "1e308", "-1",
                                   "0001-01-01T00:00:00Z", "1e400"])
@pytest.mark.parametrize("route", ["/api/billing", "/api/usage"])
async def test_times_out_of_range_are_a_400_naming_the_parameter(api, route, value) -> None:
    for key in ("since", "until"):
        resp = await api.get(route, params={key: value})
        assert resp.status == 400, (route, key, value)
        error = (await resp.json())["error"]
        assert (error["code"], error["param"]) == ("invalid_value", key)
        assert "1970" in error["message"]


async def test_usage_over_decades_picks_a_step_that_fits(api) -> None:
    resp = await api.get("/api/usage", params={"since": "0"})
    assert resp.status == 200
    body = await resp.json()
    assert body["step"] % 86_400 == 0
    assert (body["until"] - body["since"]) / body["step"] <= 3600


@pytest.fixture
async def odd_api(aiohttp_client, tmp_path, monkeypatch):
    """Seven deployments of three owners billed odd milliseconds at 0.033/h across a UTC
    midnight: every row's exact cost has a remainder below 1e-9."""
    monkeypatch.setenv(TOKEN_ENV, ADMIN_TOKEN)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    store = await Store.open(state / "berth.db")
    midnight = (T0 // 86_400 + 1) * 86_400 * 1000
    exact: list[tuple[str, int]] = []
    try:
        for i in range(7):
            owner = ("ann", "bob", "cy")[i % 3]
            row = await store.create_deployment(name=f"d{i}", model="m", hardware="micro",
                                                owner=owner, task=None, status="stopped")
            await store.set_desired(row.id, "stopped")
            start = midnight - 1_000 * (i + 1) - 7 * i
            interval = await store.open_interval(
                deployment_id=row.id, deployment=f"d{i}", owner=owner, hardware="micro",
                pid=1, rate_micros_per_hour=33_000, currency="USD", start_ms=start)
            end = midnight + 1_337 * i + 1
            await store.record_second(ends={interval: end}, requests=[], usage={})
            exact.append((f"d{i}", (end - start) * 33_000))
    finally:
        await store.close()
    path = write_config(tmp_path / "config.toml", state_dir=state,
                        models_dir=tmp_path / "models")
    client = await aiohttp_client(create_app(load_config(path)), headers=AUTH)
    client.exact = exact
    return client


async def test_the_total_is_the_same_whichever_way_it_is_grouped(odd_api) -> None:
    whole = money.cost(sum(n for _, n in odd_api.exact))  # rounded once, from the exact sum
    individually = sum(money.cost(n) for _, n in odd_api.exact)
    assert individually != whole  # the ledger is one where naive rounding drifts
    for group_by in ("deployment", "owner", "day"):
        body = await (await odd_api.get("/api/billing", params={"group_by": group_by})).json()
        (total,) = body["totals"]
        assert total["cost"] == money.text(whole), group_by
        assert sum(Decimal(d["cost"]) for d in body["data"]) == whole, group_by
        assert all("E" not in d["cost"] and len(d["cost"].split(".")[1]) == 9
                   for d in body["data"])
    rows = (await (await odd_api.get("/api/billing")).json())["data"]
    for (name, numerator), row in zip(odd_api.exact, rows, strict=True):
        assert row["key"] == name
        assert abs(Decimal(row["cost"]) - money.cost(numerator)) <= money.QUANTUM


async def test_a_cost_too_small_for_its_exponent_is_written_in_plain_digits(api) -> None:
    body = await (await api.get("/api/billing", params={
        "since": str(T0), "until": f"{T0}.004"})).json()  # 4 ms at 0.036/h
    (row,) = body["data"]
    assert row["cost"] == "0.000000040"
    empty = await (await api.get("/api/billing", params={"since": "1", "until": "2"})).json()
    assert empty["totals"] == [{"currency": "EUR", "billed_seconds": 0.0,
                                "cost": "0.000000000"}]


@pytest.mark.parametrize("value", ["\u0661\u0667\u0669\u0666", "1_796_404_000", "\uff11",
                                   "9999-12-31"])
async def test_times_are_ascii_digits_or_iso(api, value) -> None:
    # (9999-12-31 as `until` is the end of that day: past what a time may be)
    resp = await api.get("/api/billing", params={"since": "0", "until": value})
    assert resp.status == 400, value
    assert (await resp.json())["error"]["param"] == "until"
    resp = await api.get("/api/usage", params={"step": "\uff11"})
    assert resp.status == 400


async def test_a_bare_date_as_until_means_the_whole_day(api) -> None:
    day = datetime.fromtimestamp(T0, UTC).date().isoformat()
    body = await (await api.get("/api/billing", params={"since": day, "until": day})).json()
    start = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)
    assert (body["since_ms"], body["until_ms"]) == (start, start + 86_400_000)
    assert body["totals"][1]["billed_seconds"] == 13.0  # both chats' USD, all on that day


async def test_a_since_in_the_future_says_so(api) -> None:
    for route in ("/api/billing", "/api/usage"):
        resp = await api.get(route, params={"since": str(T0 * 2)})
        assert resp.status == 400
        assert "since is in the future" in (await resp.json())["error"]["message"]
