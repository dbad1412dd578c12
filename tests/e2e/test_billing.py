"""Per-second billing against the real server: what ran is billed, once, at its price."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import time
from datetime import datetime
from decimal import Decimal

import pytest

from server import money
from tests.e2e.conftest import CHAT_MODEL

pytestmark = pytest.mark.e2e


def _t(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _intervals(server) -> list[tuple[int, int, int]]:
    with sqlite3.connect(server.state_dir / "berth.db") as db:
        return db.execute("SELECT start_ms, end_ms, rate_micros_per_hour FROM billing"
                          " ORDER BY start_ms").fetchall()


def _billed(server, name: str) -> dict:
    rows = server.http.get("/api/billing", params={"group_by": "deployment"}).json()
    return next(d for d in rows["data"] if d["key"] == name)


def test_running_seconds_are_billed_and_stopped_ones_are_not(berth):
    server = berth([], tiers={"micro": {"price_per_hour": "0.036"}})
    assert server.http.post("/api/deployments", json={
        "name": "meter", "model": CHAT_MODEL, "hardware": "micro"}).status_code == 201
    server.wait_status("meter", "ready")
    time.sleep(3)
    assert server.http.post("/api/deployments/meter/stop").json()["status"] == "stopped"
    events = server.events("meter")
    spawned = _t(next(e["at"] for e in events if e["status"] == "starting"))
    stopped = _t([e["at"] for e in events if e["status"] == "stopped"][-1])
    time.sleep(2.5)  # a stopped deployment bills nothing more

    dep = server.deployment("meter")["billing"]
    ran = stopped - spawned
    assert abs(dep["billed_seconds"] - ran) <= 1.0, (dep, ran)
    ms = round(dep["billed_seconds"] * 1000)
    assert dep["cost"] == money.text(money.cost(ms * 36_000))  # seconds x rate, exactly
    assert (dep["currency"], dep["rate_per_hour"]) == ("USD", "0.036")
    assert Decimal(dep["cost"]) > 0
    assert _billed(server, "meter")["cost"] == dep["cost"]

    # a delete afterwards adds nothing either; the record stays
    assert server.http.delete("/api/deployments/meter").status_code == 200
    time.sleep(1.5)
    assert _billed(server, "meter")["billed_seconds"] == dep["billed_seconds"]


def test_an_engine_stopped_within_its_first_second_is_billed(berth):
    server = berth([], tiers={"micro": {"price_per_hour": "0.036"}})
    assert server.http.post("/api/deployments", json={
        "name": "brief", "model": CHAT_MODEL, "hardware": "micro"}).status_code == 201
    assert server.http.post("/api/deployments/brief/stop").json()["status"] == "stopped"
    events = server.events("brief")
    spawned = _t(next(e["at"] for e in events if e["status"] == "starting"))
    stopped = _t([e["at"] for e in events if e["status"] == "stopped"][-1])
    time.sleep(1.5)  # a tick after the engine was reaped
    (start, end, rate), = _intervals(server)
    assert rate == 36_000
    assert abs(start / 1000 - spawned) <= 0.1 and abs(end / 1000 - stopped) <= 0.1
    assert server.deployment("brief")["billing"]["billed_seconds"] == (end - start) / 1000 > 0


def test_sigkill_and_a_price_change_bill_each_second_once_at_its_price(berth):
    server = berth([{"name": "chat", "model": CHAT_MODEL, "hardware": "micro"}],
                   tiers={"micro": {"price_per_hour": "0.036"}})
    first = server.wait_status("chat", "ready")
    time.sleep(2)
    killed_at = time.time()
    server.stop(signal.SIGKILL)  # its engine dies with it (PDEATHSIG)
    spawned_1 = _t(next(e["at"] for e in server.events_offline("chat")
                        if e["status"] == "starting"))

    # restart with a new price: the second run is billed at it, the first keeps its own
    text = server.config.read_text().replace('price_per_hour = "0.036"',
                                             'price_per_hour = "0.72"')
    server.config.write_text(text)
    server.start()
    second = server.wait_status("chat", "ready")
    assert second["pid"] != first["pid"]
    time.sleep(2)
    assert server.http.post("/api/deployments/chat/stop").status_code == 200
    events = server.events("chat")
    spawned_2 = _t([e["at"] for e in events if e["status"] == "starting"][-1])
    stopped_2 = _t([e["at"] for e in events if e["status"] == "stopped"][-1])

    rows = _intervals(server)
    assert [r[2] for r in rows] == [36_000, 720_000]
    for (_, end_a, _), (start_b, _, _) in itertools.pairwise(rows):
        assert start_b >= end_a  # never overlapping
    ran = (killed_at - spawned_1) + (stopped_2 - spawned_2)
    billed = sum(end - start for start, end, _ in rows) / 1000
    assert abs(billed - ran) <= 2.0, (billed, ran)  # +- 1 s per crash, +- 1 s rounding
    dep = server.deployment("chat")["billing"]
    assert dep["cost"] == money.text(money.cost(sum((e - s) * r for s, e, r in rows)))
    assert dep["rate_per_hour"] == "0.72"


def test_crash_backoff_bills_nothing(berth):
    server = berth([{"name": "chat", "model": CHAT_MODEL, "hardware": "micro"}],
                   supervisor={"backoff_initial_s": 5.0, "backoff_max_s": 5.0})
    first = server.wait_status("chat", "ready")
    time.sleep(1)
    os.kill(first["pid"], signal.SIGKILL)
    server.wait(lambda: server.deployment("chat")["pid"] not in (None, first["pid"]), 60,
                "a new engine after the backoff")
    second = server.wait_status("chat", "ready")
    time.sleep(1.5)
    assert server.http.post("/api/deployments/chat/stop").status_code == 200

    events = server.events("chat")
    starts = [_t(e["at"]) for e in events if e["status"] == "starting"]
    crashed = next(_t(e["at"]) for e in events if e["status"] == "crashed")
    stopped = _t([e["at"] for e in events if e["status"] == "stopped"][-1])
    assert len(starts) == 2 and second["pid"] != first["pid"]
    assert starts[1] - crashed >= 4.0  # the backoff really waited

    (s1, e1, _), (s2, e2, _) = _intervals(server)
    assert abs(e1 / 1000 - crashed) <= 1.0  # billing ended with the engine...
    assert abs(s2 / 1000 - starts[1]) <= 0.1  # ...and restarted with the next one
    assert (s2 - e1) / 1000 >= 4.0 - 1.0  # the backoff in between is not billed
    ran = (crashed - starts[0]) + (stopped - starts[1])
    assert abs((e1 - s1 + e2 - s2) / 1000 - ran) <= 2.0


def _requests(server) -> list[dict]:
    with sqlite3.connect(server.state_dir / "berth.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM requests ORDER BY id")]


def test_each_request_is_recorded_once_with_the_same_tokens_streamed_or_not(berth):
    server = berth([{"name": "chat", "model": CHAT_MODEL, "hardware": "micro"}])
    server.wait_status("chat", "ready")
    body = {"model": "chat", "prompt": "the harbour", "max_tokens": 8, "temperature": 0}
    assert server.http.post("/v1/completions", json=body).status_code == 200
    with server.http.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        streamed = r.read()
    assert streamed.rstrip().endswith(b"data: [DONE]")
    refused = server.http.post("/v1/embeddings", json={"model": "chat", "input": "x"})
    assert refused.status_code == 400
    server.wait(lambda: len(_requests(server)) >= 3, 10, "the meter to write the requests")
    time.sleep(1.5)
    rows = _requests(server)
    assert len(rows) == 3  # once each
    plain, stream, rejected = rows
    for row in (plain, stream):
        assert (row["deployment"], row["status"], row["outcome"]) == ("chat", 200, "ok")
        assert row["latency_ms"] >= row["ttfb_ms"] > 0
    assert plain["prompt_tokens"] == stream["prompt_tokens"] > 0
    assert plain["completion_tokens"] == stream["completion_tokens"] > 0
    assert (rejected["route"], rejected["status"], rejected["outcome"]) == (
        "/v1/embeddings", 400, "rejected")
    assert rejected["completion_tokens"] is None
