"""GET /v1/analytics/payments over a known set of orders in the read model: every figure,
JSON and CSV, for March 2025 in Karachi's time zone (orders a minute either side of it are
left out); the ten worst places; bad periods and missing scopes refused.

The rows are written as the order workflow writes them (``services.orders.read_model``), so
that one test covers many orders in a moment; ``tests/test_orders_read_model.py`` drives
real orders through the workflow into the same figures."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from contracts.order_facts import OrderFacts, SaveOrderInput
from services.orders import read_model
from tests.conftest import ADMIN_KEY, Api, auth, make_settings, start_api
from tests.factories import uid

# 1 March 2025, 00:00 in Karachi (UTC+5), and the instant after 31 March there.
START = datetime(2025, 2, 28, 19, 0, tzinfo=UTC)
END = datetime(2025, 3, 31, 19, 0, tzinfo=UTC)
MARCH = "/v1/analytics/payments?from=2025-03-01&to=2025-03-31"


@pytest.fixture
async def api(
    database_url: str, dev_server: WorkflowEnvironment, task_queue: str
) -> AsyncIterator[Api]:
    settings = make_settings(
        database_url,
        dev_server.client.service_client.config.target_host,
        task_queue,
        shop_timezone="Asia/Karachi",
    )
    client, manager = await start_api(settings)
    yield client
    await client.http.aclose()
    await manager.__aexit__(None, None, None)


def _order(placed_at: datetime, payment_type: str, status: str, **values: Any) -> OrderFacts:
    """An order as its workflow would have written it, ``status`` reached an hour later."""
    later = placed_at + timedelta(hours=1)
    facts: dict[str, Any] = {
        "order_id": uid("ord"),
        "customer_id": uid("c"),
        "payment_type": payment_type,
        "placed_payment_type": payment_type,
        "status": status,
        "payment_status": "pending",
        "currency": "INR",
        "total": Decimal("1000.00"),
        "placed_at": placed_at,
        "cancelled_at": later if status == "cancelled" else None,
        "delivered_at": later if status in ("delivered", "rto") else None,
        "rto_at": later + timedelta(days=1) if status == "rto" else None,
    }
    facts.update(values)
    return OrderFacts.model_validate(facts)


def _paid(placed_at: datetime, seconds: int) -> datetime:
    return placed_at + timedelta(seconds=seconds)


def _march() -> list[OrderFacts]:
    day = datetime(2025, 3, 10, 6, 0, tzinfo=UTC)
    karachi = {"city": "Karachi", "postal_code": "74000"}
    lahore = {"city": "Lahore", "postal_code": "54000"}
    return [
        # Prepaid: 4 orders, 1 cancelled, 3 delivered (one partly refunded), one in USD.
        _order(START, "prepaid", "delivered", city="Karachi", total=Decimal("1000.00")),
        _order(day, "prepaid", "cancelled", total=Decimal("500.00"), refunded_amount=500),
        _order(day, "prepaid", "delivered", total=Decimal("2000.00"), refunded_amount=300),
        _order(END - timedelta(seconds=1), "prepaid", "delivered", currency="USD", total=50),
        # COD: 5 orders; 3 asked to confirm (yes, no, no answer), 1 took the prepay offer.
        _order(
            day,
            "cod",
            "rto",
            total=1500,
            cod_confirmation_asked=True,
            cod_confirmation_answer="yes",
            **karachi,
        ),
        _order(day, "cod", "delivered", total=1200, cod_confirmation_asked=True, **karachi),
        _order(
            day,
            "cod",
            "cancelled",
            total=800,
            city="Lahore",
            cod_confirmation_asked=True,
            cod_confirmation_answer="no",
            cancel_reason="customer_declined",
        ),
        _order(
            day,
            "prepaid",
            "delivered",
            placed_payment_type="cod",
            converted_to_prepaid=True,
            discount=50,
            city="Lahore",
        ),
        _order(day, "cod", "rto", total=700, **lahore),
        # Partial COD: 4 asked upfront (3 paid after 10 min, 30 min and 2 h), 1 below the
        # minimum; 3 delivered, 1 returned, 1 cancelled unpaid.
        _order(
            day,
            "partial_cod",
            "delivered",
            upfront_amount=150,
            paid_at=_paid(day, 600),
            **karachi,
        ),
        _order(
            day,
            "partial_cod",
            "rto",
            upfront_amount=150,
            paid_at=_paid(day, 1800),
            reminders_sent=1,
            **karachi,
        ),
        _order(
            day,
            "partial_cod",
            "delivered",
            total=2000,
            upfront_amount=300,
            paid_at=_paid(day, 7200),
            reminders_sent=2,
            **lahore,
        ),
        _order(
            day,
            "partial_cod",
            "cancelled",
            upfront_amount=150,
            reminders_sent=2,
            cancel_reason="unpaid",
        ),
        _order(day, "partial_cod", "delivered", total=100, upfront_amount=0, city="Islamabad"),
    ]


def _outside() -> list[OrderFacts]:
    """A minute before March began in Karachi, and the moment it ended there."""
    return [
        _order(START - timedelta(minutes=1), "cod", "rto", city="Karachi", total=999),
        _order(END, "partial_cod", "rto", city="Karachi", upfront_amount=1, paid_at=END),
    ]


async def _write(sessionmaker: async_sessionmaker[AsyncSession], orders: list[OrderFacts]) -> None:
    async with sessionmaker() as session, session.begin():
        for facts in orders:
            written = SaveOrderInput(facts=facts, version=1, updated_at=facts.placed_at)
            assert await read_model.save(session, written)


@pytest.fixture(scope="module")
def written() -> dict[str, bool]:
    return {}


async def _march_written(
    sessionmaker: async_sessionmaker[AsyncSession], written: dict[str, bool]
) -> None:
    if not written:
        await _write(sessionmaker, _march() + _outside())
        written["march"] = True


EXPECTED_TYPES = [
    {
        "payment_type": "cod",
        "orders": 5,
        "cancelled": 1,
        "cancellation_rate": 0.2,
        "delivered": 2,
        "rto": 2,
        "rto_rate": 0.5,
        "revenue": {"INR": "5200.00"},
        "net_revenue": {"INR": "2150.00"},
    },
    {
        "payment_type": "partial_cod",
        "orders": 5,
        "cancelled": 1,
        "cancellation_rate": 0.2,
        "delivered": 3,
        "rto": 1,
        "rto_rate": 0.25,
        "revenue": {"INR": "5100.00"},
        "net_revenue": {"INR": "3100.00"},
    },
    {
        "payment_type": "prepaid",
        "orders": 4,
        "cancelled": 1,
        "cancellation_rate": 0.25,
        "delivered": 3,
        "rto": 0,
        "rto_rate": 0.0,
        "revenue": {"INR": "3500.00", "USD": "50.00"},
        "net_revenue": {"INR": "2700.00", "USD": "50.00"},
    },
]
EXPECTED_PARTIAL_COD = {
    "orders": 5,
    "upfront_asked": 4,
    "upfront_paid": 3,
    "upfront_paid_rate": 0.75,
    "median_seconds_to_pay": 1800.0,
    # percentile_cont: 1800 + 0.8 * (7200 - 1800)
    "p90_seconds_to_pay": 6120.0,
    "reminders_to_pay": {"0": 1, "1": 1, "2": 1},
}
EXPECTED_COD = {
    "orders": 5,
    "confirmations_asked": 3,
    "confirmations_answered": 2,
    "answered_yes": 1,
    "answered_no": 1,
    "confirmation_answer_rate": 2 / 3,
    "converted_to_prepaid": 1,
    "conversion_rate": 0.2,
}


async def test_every_payments_figure_for_a_known_month(
    api: Api, sessionmaker: async_sessionmaker[AsyncSession], written: dict[str, bool]
):
    await _march_written(sessionmaker, written)

    response = await api.get(f"{MARCH}&min_orders=2")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["period"] == {"from": "2025-03-01", "to": "2025-03-31", "time_zone": "Asia/Karachi"}
    assert body["min_orders"] == 2
    assert body["payment_types"] == EXPECTED_TYPES
    assert body["partial_cod"] == EXPECTED_PARTIAL_COD
    assert body["cod"] == EXPECTED_COD
    # Karachi: 5 delivered or returned, 2 returned; Lahore 3 and 1; Islamabad none returned.
    assert body["rto_by_city"] == [
        {"place": "Karachi", "delivered_or_rto": 5, "rto": 2, "rto_rate": 0.4},
        {"place": "Lahore", "delivered_or_rto": 3, "rto": 1, "rto_rate": 1 / 3},
    ]
    # Both at 0.5: the one with more returns first.
    assert body["rto_by_postal_code"] == [
        {"place": "74000", "delivered_or_rto": 4, "rto": 2, "rto_rate": 0.5},
        {"place": "54000", "delivered_or_rto": 2, "rto": 1, "rto_rate": 0.5},
    ]


async def test_places_need_the_minimum_of_delivered_or_returned_orders(
    api: Api, sessionmaker: async_sessionmaker[AsyncSession], written: dict[str, bool]
):
    await _march_written(sessionmaker, written)

    four = (await api.get(f"{MARCH}&min_orders=4")).json()
    default = (await api.get(MARCH)).json()

    assert [p["place"] for p in four["rto_by_city"]] == ["Karachi"]
    assert [p["place"] for p in four["rto_by_postal_code"]] == ["74000"]
    assert default["min_orders"] == 20
    assert (default["rto_by_city"], default["rto_by_postal_code"]) == ([], [])
    assert default["payment_types"] == EXPECTED_TYPES


async def test_the_csv_carries_the_same_figures(
    api: Api, sessionmaker: async_sessionmaker[AsyncSession], written: dict[str, bool]
):
    await _march_written(sessionmaker, written)

    response = await api.http.get(
        f"{MARCH}&min_orders=2", headers={**auth(ADMIN_KEY), "Accept": "text/csv"}
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="payments.csv"' in response.headers["content-disposition"]
    lines = list(csv.reader(io.StringIO(response.text)))
    assert lines[0] == ["section", "group", "figure", "currency", "value"]
    rows = {tuple(line[:4]): line[4] for line in lines[1:]}
    assert len(rows) == len(lines) - 1, "a figure is written twice"
    expected = {
        ("period", "", "from", ""): "2025-03-01",
        ("period", "", "time_zone", ""): "Asia/Karachi",
        ("period", "", "min_orders", ""): "2",
        ("payment_type", "cod", "orders", ""): "5",
        ("payment_type", "cod", "rto_rate", ""): "0.5",
        ("payment_type", "prepaid", "revenue", "USD"): "50.00",
        ("payment_type", "prepaid", "net_revenue", "INR"): "2700.00",
        ("payment_type", "partial_cod", "net_revenue", "INR"): "3100.00",
        ("partial_cod", "", "upfront_paid_rate", ""): "0.75",
        ("partial_cod", "", "median_seconds_to_pay", ""): "1800.0",
        ("partial_cod", "", "p90_seconds_to_pay", ""): "6120.0",
        ("partial_cod", "0 reminders", "paid", ""): "1",
        ("partial_cod", "2 reminders", "paid", ""): "1",
        ("cod", "", "confirmations_answered", ""): "2",
        ("cod", "", "converted_to_prepaid", ""): "1",
        ("rto_by_city", "Karachi", "rto_rate", ""): "0.4",
        ("rto_by_postal_code", "54000", "rto", ""): "1",
    }
    assert {k: rows.get(k) for k in expected} == expected
    # Every JSON figure has its line: 4 period lines, 8 per type and 2 for a second currency,
    # 6 + 3 partial-COD lines, 8 COD lines, 3 per ranked place.
    assert len(rows) == 4 + 3 * 8 + 2 + 6 + 3 + 8 + 3 * 4


async def test_the_ten_worst_places_are_listed_worst_first(
    api: Api, sessionmaker: async_sessionmaker[AsyncSession], written: dict[str, bool]
):
    await _march_written(sessionmaker, written)
    day = datetime(2025, 4, 10, 6, 0, tzinfo=UTC)
    towns = [f"Town {n:02}" for n in range(11)]
    orders = [_order(day, "cod", "rto", city=town) for town in towns]
    # One more delivered in Town 00 halves its rate: it drops to the end of the list.
    orders.append(_order(day, "cod", "delivered", city="Town 00"))
    await _write(sessionmaker, orders)

    body = (
        await api.get("/v1/analytics/payments?from=2025-04-01&to=2025-04-30&min_orders=1")
    ).json()

    # Karachi's return placed as April began there (_outside) ties with the towns at 1.0 and
    # comes first by name; Town 10 is the eleventh and Town 00 is down to 0.5.
    assert [p["place"] for p in body["rto_by_city"]] == ["Karachi", *towns[1:10]]
    assert body["rto_by_city"][1] == {
        "place": "Town 01",
        "delivered_or_rto": 1,
        "rto": 1,
        "rto_rate": 1.0,
    }


async def test_an_empty_period_has_zeros_and_no_rates(api: Api):
    body = (await api.get("/v1/analytics/payments?from=2001-01-01&to=2001-01-31")).json()

    assert [t["orders"] for t in body["payment_types"]] == [0, 0, 0]
    assert body["payment_types"][0]["rto_rate"] is None
    assert body["payment_types"][0]["revenue"] == {}
    assert body["partial_cod"]["median_seconds_to_pay"] is None
    assert body["partial_cod"]["reminders_to_pay"] == {}
    assert body["cod"]["conversion_rate"] is None


async def test_bad_periods_and_keys_without_the_scope_are_refused(api: Api):
    backwards = await api.get("/v1/analytics/payments?from=2025-03-31&to=2025-03-01")
    zero = await api.get(f"{MARCH}&min_orders=0")
    created = await api.http.post(
        "/v1/api-keys", json={"name": uid("ops"), "scopes": ["ops"]}, headers=auth(ADMIN_KEY)
    )
    ops_only = await api.get(MARCH, key=created.json()["key"])

    assert backwards.status_code == 422
    assert backwards.json()["fields"][0]["loc"] == ["query", "from"]
    assert zero.status_code == 422
    assert "min_orders" in zero.json()["fields"][0]["loc"]
    assert ops_only.status_code == 403
    # Days whose span in the shop's zone (UTC+5) no date-time holds: a 422, not a 500.
    for query, field in (("from=0001-01-01&to=0001-01-02", "from"), ("to=9999-12-31", "to")):
        far = await api.get(f"/v1/analytics/payments?{query}")
        assert far.status_code == 422, far.text
        assert far.json()["fields"][0]["loc"] == ["query", field]
