"""Holdout lift over the API on a constructed history: every figure exact, JSON and CSV."""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from config.settings import Settings
from contracts.rules import RuleDefinition
from db.models import JourneyEntry, JourneyOrder
from services.journeys import rules
from tests.conftest import ADMIN_KEY, Api, auth
from tests.factories import uid

ACTOR = rules.Actor(key_id=None, name="tests")
Z = 1.959963984540054


def _definition(**changes: Any) -> RuleDefinition:
    return RuleDefinition.model_validate(
        {
            "name": "Lift",
            "trigger": {"event": "customer.created"},
            # Active, but no customer of another test enters it: tests share the database.
            "conditions": {"field": "customer.id", "op": "eq", "value": "nobody"},
            "steps": [{"send": {"channels": ["email"], "template": "welcome"}}],
            "holdout_percent": 50,
            **changes,
        }
    )


async def _journeys(
    api: Api,
    rule_id: str,
    version: int,
    *,
    holdout: bool,
    count: int,
    orders: list[tuple[str, str]],
    test: bool = False,
) -> None:
    """``count`` journeys entered an hour ago; the first ``len(orders)`` reached their goal
    with an order of (total, currency) within the window."""
    entered = datetime.now(UTC) - timedelta(hours=1)
    async with api.app.state.sessionmaker() as session, session.begin():
        for n in range(count):
            customer_id = uid("c_lift")
            entry = JourneyEntry(
                rule_id=rule_id,
                rule_version=version,
                customer_id=customer_id,
                workflow_id=f"journey/{rule_id}/{customer_id}",
                run_id="run",
                holdout=holdout,
                test=test,
                entered_at=entered,
            )
            session.add(entry)
            await session.flush()
            if n < len(orders):
                total, currency = orders[n]
                session.add(_order(entry, total, currency, converted=True))
            elif n == len(orders):  # an order after the window: no conversion
                session.add(_order(entry, "999.00", "PKR", converted=False))


def _order(entry: JourneyEntry, total: str, currency: str, *, converted: bool) -> JourneyOrder:
    return JourneyOrder(
        entry_id=entry.id,
        order_id=uid("o"),
        customer_id=entry.customer_id,
        revenue=Decimal(total),
        currency=currency,
        ordered_at=entry.entered_at + timedelta(minutes=30),
        converted=converted,
    )


async def test_lift_per_version_with_its_interval_and_incremental_revenue(
    api: Api, settings: Settings
):
    async with api.app.state.sessionmaker() as session, session.begin():
        rule, _ = await rules.create(session, _definition(), ACTOR, status="active")
        rule_id = rule.id
    async with api.app.state.sessionmaker() as session, session.begin():
        await rules.update(session, rule_id, _definition(holdout_percent=20), ACTOR)
    # v1: 40 treated, 12 converted (PKR 15,000 and USD 30); 40 held out, 6 (PKR 4,500).
    treated = [("1250.00", "PKR")] * 12 + [("30.00", "USD")]
    await _journeys(api, rule_id, 1, holdout=False, count=40, orders=treated[:12])
    # the 13th journey above ordered outside its window; one more treated one in USD:
    await _journeys(api, rule_id, 1, holdout=False, count=1, orders=treated[12:])
    await _journeys(api, rule_id, 1, holdout=True, count=40, orders=[("750.00", "PKR")] * 6)
    await _journeys(api, rule_id, 1, holdout=True, count=5, orders=[], test=True)  # left out
    # v2: too few held out to measure.
    await _journeys(api, rule_id, 2, holdout=False, count=50, orders=[("100.00", "PKR")] * 5)
    await _journeys(api, rule_id, 2, holdout=True, count=10, orders=[("100.00", "PKR")])

    response = await api.get(f"/v1/analytics/rules/{rule_id}/lift")
    exported = await api.http.get(
        f"/v1/analytics/rules/{rule_id}/lift",
        headers={**auth(ADMIN_KEY), "Accept": "text/csv"},
    )
    missing = await api.get("/v1/analytics/rules/no_such_rule/lift")

    assert response.status_code == 200, response.text
    [v1, v2] = response.json()["versions"]
    p_t, p_h = 13 / 41, 6 / 40
    error = math.sqrt(p_t * (1 - p_t) / 41 + p_h * (1 - p_h) / 40)
    diff = p_t - p_h
    assert v1["status"] == "measured"
    assert v1["holdout_percent"] == 50
    assert v1["treated"] == {
        "journeys": 41,
        "conversions": 13,
        "conversion_rate": p_t,
        "revenue": {"PKR": "15000.00", "USD": "30.00"},
    }
    assert v1["held_out"] == {
        "journeys": 40,
        "conversions": 6,
        "conversion_rate": p_h,
        "revenue": {"PKR": "4500.00"},
    }
    assert v1["absolute_lift"] == diff
    assert v1["absolute_lift_ci"] == {"low": diff - Z * error, "high": diff + Z * error}
    assert v1["relative_lift"] == diff / p_h
    assert v1["relative_lift_ci"] == {
        "low": (diff - Z * error) / p_h,
        "high": (diff + Z * error) / p_h,
    }
    # (15000/41 - 4500/40) x 41 = 15000 - 4612.50; USD: 30 - 0
    assert v1["incremental_revenue"] == {"PKR": "10387.50", "USD": "30.00"}
    assert (v2["version"], v2["holdout_percent"], v2["status"]) == (2, 20, "collecting")
    assert (v2["treated"]["conversions"], v2["held_out"]["journeys"]) == (5, 10)
    assert (v2["absolute_lift"], v2["absolute_lift_ci"], v2["incremental_revenue"]) == (
        None,
        None,
        {},
    )
    assert exported.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["version"], r["currency"], r["incremental_revenue"]) for r in rows] == [
        ("1", "PKR", "10387.50"),
        ("1", "USD", "30.00"),
        ("2", "PKR", ""),
    ]
    assert float(rows[0]["absolute_lift_ci_low"]) == diff - Z * error
    assert rows[0]["treated_journeys"] == "41"
    assert rows[0]["held_out_conversions"] == "6"
    assert missing.status_code == 404
