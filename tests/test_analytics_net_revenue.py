"""GET /v1/analytics/net-revenue on a known history: a rule's credited orders at placement
beside what they came to once cancelled, returned to origin and refunded, and how its COD
orders behaved."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from db.models import Attribution, Order
from tests.conftest import ADMIN_KEY, Api, auth, make_settings, start_api
from tests.factories import archived_rule, uid

# A year of its own: tests share the database.
PERIOD = "from=2019-05-01&to=2019-05-31"
PLACED = datetime(2019, 5, 10, 12, tzinfo=UTC)


@pytest.fixture
async def shop_api(
    database_url: str, dev_server: WorkflowEnvironment, task_queue: str
) -> AsyncIterator[Api]:
    settings = make_settings(
        database_url, dev_server.client.service_client.config.target_host, task_queue
    )
    api, manager = await start_api(settings)
    yield api
    await api.http.aclose()
    await manager.__aexit__(None, None, None)


def _order(order_id: str, total: str, placed_type: str, status: str, **values: Any) -> Order:
    return Order(
        order_id=order_id,
        customer_id="c_net",
        payment_type=values.pop("payment_type", placed_type),
        placed_payment_type=placed_type,
        status=status,
        payment_status=values.pop("payment_status", "pending"),
        currency="INR",
        total=Decimal(total),
        discount=Decimal(0),
        paid_amount=Decimal(0),
        refunded_amount=Decimal(values.pop("refunded", "0")),
        placed_at=PLACED,
        reminders_sent=0,
        cod_confirmation_asked=False,
        converted_to_prepaid=values.pop("converted_to_prepaid", False),
        on_hold=False,
        sla_breached=False,
        updated_at=PLACED,
        version=1,
        **values,
    )


def _credit(
    order_id: str, rule_id: str, total: str, currency: str = "INR", **at: Any
) -> Attribution:
    return Attribution(
        order_id=order_id,
        customer_id="c_net",
        rule_id=rule_id,
        rule_version=1,
        channel="sms",
        revenue=Decimal(total),
        currency=currency,
        ordered_at=at.get("ordered_at", PLACED),
    )


async def test_net_revenue_per_rule_on_a_known_history(
    shop_api: Api, sessionmaker: async_sessionmaker[AsyncSession]
):
    cart, welcome = uid("rule"), uid("rule")
    o = {name: uid(name) for name in ("o1", "o2", "o3", "o4", "o5", "o6", "o7")}
    async with sessionmaker() as session, session.begin():
        session.add_all(
            [
                *archived_rule(cart, "Cart rescue"),
                *archived_rule(welcome, "Welcome", trigger="customer.created"),
                # Delivered COD that switched to prepaid, 100 refunded afterwards.
                _order(
                    o["o1"],
                    "1000.00",
                    "cod",
                    "delivered",
                    payment_type="prepaid",
                    converted_to_prepaid=True,
                    refunded="100.00",
                ),
                # Refused at the door.
                _order(o["o2"], "500.00", "cod", "rto"),
                # Partial COD never paid upfront, cancelled.
                _order(o["o3"], "300.00", "partial_cod", "cancelled"),
                # Partial COD paid upfront and delivered.
                _order(o["o4"], "800.00", "partial_cod", "delivered", paid_at=PLACED),
                # o5 is credited but its workflow has written no row yet.
                _order(o["o6"], "50.00", "prepaid", "delivered"),
                _order(o["o7"], "999.00", "cod", "rto"),
            ]
        )
        await session.flush()
        session.add_all(
            [
                _credit(o["o1"], cart, "1000.00"),
                _credit(o["o2"], cart, "500.00"),
                _credit(o["o3"], cart, "300.00"),
                _credit(o["o4"], cart, "800.00"),
                _credit(o["o5"], cart, "200.00"),
                _credit(o["o6"], welcome, "50.00", currency="USD"),
                # Placed in April: outside the period.
                _credit(o["o7"], cart, "999.00", ordered_at=datetime(2019, 4, 30, 12, tzinfo=UTC)),
            ]
        )

    response = await shop_api.get(f"/v1/analytics/net-revenue?{PERIOD}")

    assert response.status_code == 200, response.text
    rules = {r["rule_id"]: r for r in response.json()["rules"]}
    assert rules[cart]["name"] == "Cart rescue"
    assert rules[cart]["currencies"] == {
        "INR": {
            "orders": 5,
            "outcome_unknown": 1,
            "placed_revenue": "2800.00",
            "net_revenue": "1700.00",
            "refunded": "100.00",
            "cancelled": 1,
            "rto": 1,
            "delivered": 2,
            "rto_rate": pytest.approx(1 / 3),
            "cod_orders": 2,
            "cod_to_prepaid_rate": 0.5,
            "partial_cod_orders": 2,
            "partial_cod_collection_rate": 0.5,
        }
    }
    assert rules[welcome]["currencies"]["USD"]["net_revenue"] == "50.00"
    assert rules[welcome]["currencies"]["USD"]["rto_rate"] == 0.0

    csv = await shop_api.http.get(
        f"/v1/analytics/net-revenue?{PERIOD}", headers={**auth(ADMIN_KEY), "Accept": "text/csv"}
    )
    lines = csv.text.splitlines()
    assert lines[0].startswith("rule_id,name,currency,orders,outcome_unknown,placed_revenue")
    assert f"{cart},Cart rescue,INR,5,1,2800.00,1700.00,100.00,1,1,2," in csv.text
