"""Money on the deployments screen: a deployment billed in two currencies shows both
(never summed); the day's total says that it counts deleted deployments too."""

from __future__ import annotations

from decimal import Decimal

from textual.widgets import Static

from tests.tui.pilot_helpers import names, table, until
from tests.tui.recorded import NOW
from tui import format as fmt
from tui.api import Deployment
from tui.app import BerthApp


def dep(billing: object) -> Deployment:
    d = Deployment.from_json({"name": "x", "billing": billing})
    assert d is not None
    return d


def test_every_currency_billed_is_shown() -> None:
    both = dep({"cost": "0.0007", "currency": "USD",
                "costs": {"USD": "0.0007", "EUR": "0.00012"}})
    assert fmt.moneys(both.all_costs) == "0.0007 USD + 0.0001 EUR"
    assert fmt.moneys(both.all_costs, 6) == "0.000700 USD + 0.000120 EUR"
    # the configured currency first, even at 0; other currencies only where non-zero
    changed = dep({"cost": "0", "currency": "EUR",
                   "costs": {"USD": "0.5", "EUR": "0", "GBP": "0"}})
    assert fmt.moneys(changed.all_costs) == "0.0000 EUR + 0.5000 USD"


def test_costs_absent_or_odd_fall_back_to_cost() -> None:
    assert fmt.moneys(dep({"cost": "0.0007", "currency": "USD"}).all_costs) == "0.0007 USD"
    assert dep({"cost": "1", "currency": "USD", "costs": ["x"]}).costs == {}
    odd = dep({"cost": "1", "currency": "USD", "costs": {"EUR": 3, "GBP": "nan", "X": "2"}})
    assert odd.costs == {"X": Decimal(2)}
    assert fmt.moneys(dep({}).all_costs) == fmt.DASH
    only_costs = dep({"currency": "USD", "costs": {"USD": "0.25"}})
    assert fmt.moneys(only_costs.all_costs) == "0.2500 USD"


async def test_the_table_and_the_summary(recorded) -> None:
    app = BerthApp(recorded.url, "token", poll_s=0.2, clock=lambda: NOW)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(names(pilot)) == 4, 20, "the rows")
        t = table(pilot)
        assert t.get_cell("old", "cost").plain == "0.0055 USD + 0.0012 EUR"
        assert t.get_cell("chat", "cost").plain == "0.0342 USD"
        summary = str(app.screen.query_one("#summary", Static).visual)
        assert "today (UTC), all deployments incl. deleted: 0.0473 USD" in summary
