"""The console's pure parts: the name rule, URL and token resolution, number formats."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from server.config import NAME_PATTERN, valid_name
from tui import format as fmt
from tui import names, settings
from tui.api import Deployment, Reader
from tui.widgets.series_plot import segments

NAME_CHARS = st.text(alphabet="abcxyzABZ019-_. é\n", max_size=70)


@given(NAME_CHARS)
def test_the_name_rule_is_the_servers(name: str) -> None:
    assert (names.name_problem(name) is None) == valid_name(name)


def test_the_name_pattern_is_the_servers() -> None:
    assert names.NAME_PATTERN == NAME_PATTERN


def test_each_bad_name_says_why() -> None:
    assert names.name_problem("") == "a name is required"
    assert names.name_problem("Chat") == "lowercase letters only"
    assert "'_'" in (names.name_problem("a_b") or "")
    assert "start and end" in (names.name_problem("ab-") or "")
    assert "64" in (names.name_problem("a" * 64) or "")
    assert names.name_problem("a" * 63) is None


def test_url_and_token_follow_the_cli_rules(tmp_path, monkeypatch) -> None:
    for var in ("BERTH_URL", "BERTH_TOKEN", "BERTH_ADMIN_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "config.toml"
    assert settings.resolve_url(None) == "http://127.0.0.1:8080"
    assert settings.resolve_token(None, config) is None  # no config here
    config.write_text('[server]\nstate_dir = "st"\n')
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "admin.token").write_text("from-file\n")
    assert settings.resolve_token(None, config) == "from-file"
    monkeypatch.setenv("BERTH_ADMIN_TOKEN", "admin-env")
    assert settings.resolve_token(None, config) == "admin-env"
    monkeypatch.setenv("BERTH_TOKEN", "token-env")
    assert settings.resolve_token(None, config) == "token-env"
    assert settings.resolve_token("flag", config) == "flag"
    monkeypatch.setenv("BERTH_URL", "http://10.0.0.5:8080/")
    assert settings.resolve_url(None) == "http://10.0.0.5:8080"
    assert settings.resolve_url("http://h:1") == "http://h:1"
    config.write_text("not toml [")
    monkeypatch.delenv("BERTH_TOKEN")
    monkeypatch.delenv("BERTH_ADMIN_TOKEN")
    assert settings.resolve_token(None, config) is None


def test_formats() -> None:
    assert fmt.duration(5) == "5s" and fmt.duration(245) == "4m05s"
    assert fmt.duration(7380) == "2h03m" and fmt.duration(3 * 86_400 + 7200) == "3d02h"
    assert fmt.size(2 * 1024**3) == "2.0 GiB" and fmt.size(None) == "-"
    assert fmt.money(Decimal("0.000917"), "USD") == "0.0009 USD"
    assert fmt.money(Decimal("1234.5"), "USD", 2) == "1,234.50 USD"
    assert fmt.per_hour(Decimal("0.033")) == "0.033/h"


def test_reader_gives_types_or_none() -> None:
    r = Reader({"n": True, "f": float("nan"), "m": "1e5", "bad": "x", "t": "2026-12-04T10:00Z"})
    assert r.integer("n") is None and r.number("f") is None and r.flag("n")
    assert r.money("m") == Decimal("1e5") and r.money("bad") is None
    assert r.time("t") is not None and r.time("bad") is None
    assert Reader([1]).text("x") is None
    assert Deployment.from_json({"name": 3}) is None
    dep = Deployment.from_json({"name": "a", "status": None, "usage": [1]})
    assert dep is not None and dep.status == "unknown" and dep.cpu_percent is None


def test_plot_runs_break_at_gaps() -> None:
    step = 5
    points = [(-60.0, 1.0), (-55.0, 2.0), (-50.0, 3.0),  # a run
              (-30.0, 4.0), (-25.0, 5.0),  # three buckets missing before it
              (-20.0, None), (-15.0, 6.0),  # a bucket without a value
              (-10.0, 7.0), (-3.0, 8.0)]  # 7 s apart: within a step and a half
    assert segments(points, max_gap_s=step * 1.5) == [
        [(-60.0, 1.0), (-55.0, 2.0), (-50.0, 3.0)], [(-30.0, 4.0), (-25.0, 5.0)],
        [(-15.0, 6.0), (-10.0, 7.0), (-3.0, 8.0)]]
    assert segments([], 7.5) == [] and segments([(0.0, None)], 7.5) == []
    assert segments([(-5.0, 1.0), (-10.0, 2.0)], 7.5) == [[(-10.0, 2.0), (-5.0, 1.0)]]


def test_billed_times_and_exact_money() -> None:
    assert fmt.billed(30.6) == "0:00:30.600" and fmt.billed(95.25) == "0:01:35.250"
    assert fmt.billed(90_000) == "25:00:00.000" and fmt.billed(None) == "-"
    assert fmt.money_places([Decimal("0.034196250"), Decimal("1.5"), None]) == 8
    assert fmt.money_places([Decimal("3")]) == 2


def test_retry_in_counts_from_the_servers_time() -> None:
    at = datetime(2026, 12, 4, 10, 0, 12, tzinfo=UTC)
    start = at.timestamp() - 12
    assert fmt.retry_in(at, start) == "retrying in 12 s"
    assert fmt.retry_in(at, start + 11.5) == "retrying in 1 s"
    assert fmt.retry_in(at, start + 12) == "retrying now"
    assert fmt.retry_in(None, start) is None
    assert fmt.retry_in(at, start, short=True) == "retry in 12 s"  # the table's column
    assert fmt.retry_in(at, start + 12, short=True) == "retry now"
