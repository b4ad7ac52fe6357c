"""The orders read model on the dev server: real orders placed through the API, paid by a
verified Razorpay webhook, moved by ops and by the shop's events, keep their row in
``orders`` current; GET /v1/orders lists them and the payments analytics count them. A
late or repeated write never takes a row back."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from contracts.order_facts import OrderFacts, SaveOrderInput
from contracts.orders import OrderStatus
from db.models import Order
from services.orders import read_model
from tests.conftest import ADMIN_KEY, Api, auth
from tests.factories import customer, eventually, item, now_iso, uid
from tests.order_shop import OrderShop, ShopEndpoint, order_settings
from tests.providers.fake_payments import (
    RAZORPAY_WEBHOOK_SECRET,
    FakeRazorpay,
    FakeStripe,
)
from worker import build_worker

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


async def _place(api: Api, payment_type: str, currency: str, total: str, **data: Any) -> str:
    order_id = uid("ord")
    response = await api.post_event(
        {
            "id": uid("evt"),
            "type": "order.placed",
            "occurred_at": now_iso(),
            "customer": customer(uid("c")),
            "data": {
                "order_id": order_id,
                "items": [item(unit_price=total)],
                "total": total,
                "currency": currency,
                "payment_type": payment_type,
                **data,
            },
        }
    )
    assert response.status_code == 202, response.text
    return order_id


async def _event(api: Api, type: str, order_id: str, **data: Any) -> None:
    response = await api.post_event(
        {
            "id": uid("evt"),
            "type": type,
            "occurred_at": now_iso(),
            "data": {"order_id": order_id, **data},
        }
    )
    assert response.status_code == 202, response.text


async def _move(api: Api, order_id: str, to: str) -> None:
    moved = await api.http.post(
        f"/v1/orders/{order_id}/transitions", json={"to": to}, headers=auth(ADMIN_KEY)
    )
    assert moved.status_code == 200, moved.text


async def _row(
    sessionmaker: async_sessionmaker[AsyncSession], order_id: str, **expected: Any
) -> Order:
    async def probe() -> Order | None:
        async with sessionmaker() as session:
            row = await session.get(Order, order_id)
        ok = row is not None and all(getattr(row, k) == v for k, v in expected.items())
        return row if ok else None

    return await eventually(probe, within=20, what=f"order {order_id}'s row with {expected}")


async def _async(value: Any) -> Any:
    return value


def _days() -> str:
    today = datetime.now(UTC).date()
    return f"from={today - timedelta(days=1)}&to={today + timedelta(days=1)}"


def _counts(figures: dict[str, Any]) -> dict[str, int]:
    found = {
        f"{t['payment_type']}.{name}": t[name]
        for t in figures["payment_types"]
        for name in ("orders", "cancelled", "delivered", "rto")
    }
    found["partial_cod.upfront_paid"] = figures["partial_cod"]["upfront_paid"]
    return found


async def test_orders_keep_their_rows_current_and_are_listed_and_counted(
    order_api: Api, fake_razorpay: FakeRazorpay, sessionmaker: async_sessionmaker[AsyncSession]
):
    api = order_api
    before = (await api.get(f"/v1/analytics/payments?{_days()}")).json()

    # Partial COD in Karachi: awaiting its upfront, paid by a signed webhook, then moved.
    partial = await _place(
        api, "partial_cod", "INR", "1000.00", city="Karachi", postal_code="74000"
    )
    awaiting = await _row(sessionmaker, partial, status="awaiting_payment")
    assert (awaiting.upfront_amount, awaiting.paid_amount) == (Decimal(150), Decimal(0))
    assert (awaiting.city, awaiting.postal_code, awaiting.paid_at) == ("Karachi", "74000", None)
    await eventually(lambda: _async(fake_razorpay.links), what="the payment link")
    [link] = fake_razorpay.links.values()
    body, event_id = fake_razorpay.pay(link["id"])
    signature = hmac.new(RAZORPAY_WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    paid = await api.http.post(
        "/v1/webhooks/razorpay",
        content=body,
        headers={
            "X-Razorpay-Event-Id": event_id,
            "X-Razorpay-Signature": signature,
            "Content-Type": "application/json",
        },
    )
    assert paid.status_code == 200, paid.text
    confirmed = await _row(sessionmaker, partial, status="confirmed")
    assert (confirmed.payment_status, confirmed.paid_amount) == ("partially_paid", Decimal(150))
    assert confirmed.paid_at is not None
    assert confirmed.confirmed_at == confirmed.paid_at
    assert confirmed.version > awaiting.version
    for to in ("shipped", "delivered"):
        await _move(api, partial, to)
    delivered = await _row(sessionmaker, partial, status="delivered")
    assert (delivered.payment_status, delivered.paid_amount) == ("fully_paid", Decimal(1000))
    assert delivered.paid_at == confirmed.paid_at, "cash at the door is not an online payment"
    assert delivered.delivered_at is not None
    assert delivered.confirmed_at is not None
    assert delivered.delivered_at > delivered.confirmed_at

    # COD: shipped and delivered by the carrier's events, then back at the warehouse.
    cod = await _place(api, "cod", "PKR", "4500.00", city="Lahore")
    await _row(sessionmaker, cod, status="confirmed")
    # Sent back to back: the return may be taken with the delivery, in its run or after.
    for type in ("order.shipped", "order.delivered", "order.rto"):
        await _event(api, type, cod, reason="refused at the door")
    returned = await _row(sessionmaker, cod, status="rto")
    assert returned.delivered_at is not None
    assert returned.rto_at is not None
    assert (returned.payment_status, returned.paid_amount) == ("pending", Decimal(0))
    assert (returned.city, returned.postal_code) == ("Lahore", None)

    # Prepaid, never paid: the shop cancels it.
    prepaid = await _place(api, "prepaid", "PKR", "2000.00")
    await _row(sessionmaker, prepaid, status="awaiting_payment")
    await _event(api, "order.cancelled", prepaid)
    cancelled = await _row(sessionmaker, prepaid, status="cancelled")
    assert (cancelled.cancel_reason, cancelled.cancelled_at is not None) == ("shop", True)

    # The list, newest placed first, a page at a time. Other tests' orders share the
    # database, so this test's three are found in order among them, and two pages of two
    # are exactly the list's first four.
    listed = (await api.get("/v1/orders?limit=500")).json()["orders"]
    ours = {o["order_id"]: o for o in listed if o["order_id"] in (prepaid, cod, partial)}
    assert list(ours) == [prepaid, cod, partial]
    assert (ours[partial]["status"], ours[partial]["upfront_amount"]) == ("delivered", "150.00")
    first = (await api.get("/v1/orders?limit=2")).json()
    second = (await api.get(f"/v1/orders?limit=2&cursor={first['next_cursor']}")).json()
    paged = [o["order_id"] for o in first["orders"] + second["orders"]]
    assert paged == [o["order_id"] for o in listed[:4]]
    mine = (await api.get(f"/v1/orders?customer_id={returned.customer_id}")).json()
    assert [o["order_id"] for o in mine["orders"]] == [cod]
    assert mine["next_cursor"] is None
    cod_returns = (await api.get("/v1/orders?status=rto&payment_type=cod&limit=500")).json()
    assert cod in [o["order_id"] for o in cod_returns["orders"]]
    assert {(o["status"], o["payment_type"]) for o in cod_returns["orders"]} == {("rto", "cod")}
    partly = (await api.get("/v1/orders?payment_status=fully_paid&sla_breached=false")).json()
    assert partial in [o["order_id"] for o in partly["orders"]]
    assert cod not in [o["order_id"] for o in partly["orders"]]

    # And the payments figures count each of them once.
    after = (await api.get(f"/v1/analytics/payments?{_days()}")).json()
    grown = {k: v - _counts(before)[k] for k, v in _counts(after).items()}
    assert grown == {
        "cod.orders": 1,
        "cod.cancelled": 0,
        "cod.delivered": 0,
        "cod.rto": 1,
        "partial_cod.orders": 1,
        "partial_cod.cancelled": 0,
        "partial_cod.delivered": 1,
        "partial_cod.rto": 0,
        "prepaid.orders": 1,
        "prepaid.cancelled": 1,
        "prepaid.delivered": 0,
        "prepaid.rto": 0,
        "partial_cod.upfront_paid": 1,
    }


async def test_a_refund_told_after_the_order_ended_reopens_it_and_shows(
    order_api: Api, dev_server: WorkflowEnvironment, sessionmaker: async_sessionmaker[AsyncSession]
):
    api = order_api
    order_id = await _place(api, "cod", "PKR", "4500.00")
    await _row(sessionmaker, order_id, status="confirmed")
    for to in ("shipped", "delivered"):
        await _move(api, order_id, to)
    ended = await _row(sessionmaker, order_id, status="delivered")
    handle = dev_server.client.get_workflow_handle(f"order/{order_id}")

    async def closed() -> bool:
        return (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED

    await eventually(closed, within=20, what="the order's run to end")

    await _event(
        api, "payment.refunded", order_id, amount="500.00", currency="PKR", refund_id="rf_1"
    )

    refunded = await _row(sessionmaker, order_id, refunded_amount=Decimal(500))
    assert refunded.version > ended.version
    assert refunded.status == "delivered"
    state = (await api.get(f"/v1/orders/{order_id}")).json()
    assert (state["reopened"], state["refunds_reported"]) == (1, {"rf_1": "500.00"})


@pytest.fixture
async def confirming_shop(
    time_skipping: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_razorpay: FakeRazorpay,
    fake_stripe: FakeStripe,
    shop_endpoint: ShopEndpoint,
) -> AsyncIterator[OrderShop]:
    """COD orders are asked to confirm and offered 5% off to pay online now."""
    settings = order_settings(
        database_url,
        task_queue,
        fake_razorpay,
        fake_stripe,
        shop_endpoint,
        cod_confirmation=True,
        cod_prepay_offer_percent=Decimal(5),
    )
    shop = OrderShop(time_skipping, settings, sessionmaker)
    async with build_worker(time_skipping.client, task_queue, sessionmaker, settings):
        yield shop
    await shop.terminate_all()


async def test_reminders_confirmations_and_the_prepay_offer_reach_the_row(
    confirming_shop: OrderShop, sessionmaker: async_sessionmaker[AsyncSession]
):
    shop = confirming_shop
    partial = await shop.place("partial_cod", currency="INR", total="1000.00")
    confirmed = await shop.place("cod", currency="INR", total="1000.00")
    converted = await shop.place("cod", currency="INR", total="1000.00")
    await shop.settle()
    await shop.reply(confirmed, "Yes")
    await shop.provider_paid(converted, payment_id="pay_offer_rm", provider="razorpay")
    # Both reminders (15 min, 2 h) go before the upfront is paid.
    await shop.env.sleep(2 * HOUR + MINUTE)
    await shop.provider_paid(partial, payment_id="pay_upfront_rm", provider="razorpay")
    await shop.settle()

    row = await _row(sessionmaker, partial, status="confirmed", reminders_sent=2)
    assert row.paid_at is not None
    assert row.paid_at - row.placed_at >= 2 * HOUR
    assert (row.cod_confirmation_asked, row.converted_to_prepaid) == (False, False)
    row = await _row(sessionmaker, confirmed, status="confirmed")
    assert (row.cod_confirmation_asked, row.cod_confirmation_answer) == (True, "yes")
    assert (row.payment_type, row.converted_to_prepaid, row.paid_at) == ("cod", False, None)
    row = await _row(sessionmaker, converted, status="confirmed", payment_type="prepaid")
    assert (row.placed_payment_type, row.converted_to_prepaid) == ("cod", True)
    assert (row.cod_confirmation_asked, row.cod_confirmation_answer) == (True, None)
    assert (row.discount, row.paid_amount, row.payment_status) == (
        Decimal(50),
        Decimal(950),
        "fully_paid",
    )
    assert row.paid_at is not None


@pytest.fixture
async def shop(
    time_skipping: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_razorpay: FakeRazorpay,
    fake_stripe: FakeStripe,
    shop_endpoint: ShopEndpoint,
) -> AsyncIterator[OrderShop]:
    settings = order_settings(database_url, task_queue, fake_razorpay, fake_stripe, shop_endpoint)
    shop = OrderShop(time_skipping, settings, sessionmaker)
    async with build_worker(time_skipping.client, task_queue, sessionmaker, settings):
        yield shop
    await shop.terminate_all()


async def test_a_return_scanned_right_after_the_delivery_is_an_rto_not_a_stale_event(
    shop: OrderShop, shop_endpoint: ShopEndpoint, sessionmaker: async_sessionmaker[AsyncSession]
):
    order_id = await shop.place("cod")
    await shop.settle()
    # Both scans arrive before the order is shipped: they wait for it, and are applied one
    # after the other once ops ship it.
    await shop.event("order.delivered", order_id)
    await shop.event("order.rto", order_id, reason="refused at the door")
    await shop.settle()
    await shop.transition(order_id, "shipped")
    await shop.settle()

    state = await shop.state(order_id)
    assert (state.status, state.payment_status, state.ignored_events) == ("rto", "pending", 0)
    assert state.rto_reason == "refused at the door"
    row = await _row(sessionmaker, order_id, status="rto")
    assert None not in (row.delivered_at, row.rto_at)
    assert "order.rto_after_delivery" in shop_endpoint.types(order_id)


def _facts(**values: Any) -> OrderFacts:
    facts: dict[str, Any] = {
        "order_id": uid("ord"),
        "customer_id": uid("c"),
        "payment_type": "partial_cod",
        "placed_payment_type": "partial_cod",
        "status": "awaiting_payment",
        "payment_status": "pending",
        "currency": "INR",
        "total": Decimal("1000.00"),
        "placed_at": datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
    }
    facts.update(values)
    return OrderFacts.model_validate(facts)


async def test_a_late_or_repeated_write_never_takes_the_row_back(
    sessionmaker: async_sessionmaker[AsyncSession],
):
    at = datetime(2024, 5, 1, 10, 30, tzinfo=UTC)
    awaiting = _facts()
    paid = awaiting.model_copy(
        update={"status": OrderStatus.confirmed, "payment_status": "partially_paid", "paid_at": at}
    )

    async def save(facts: OrderFacts, version: int) -> bool:
        async with sessionmaker() as session, session.begin():
            write = SaveOrderInput(facts=facts, version=version, updated_at=at)
            return await read_model.save(session, write)

    async def row() -> tuple[str, int, datetime | None]:
        async with sessionmaker() as session:
            found = await session.get(Order, awaiting.order_id)
        assert found is not None
        return found.status, found.version, found.paid_at

    assert await save(awaiting, 1)
    assert await save(paid, 2)
    assert not await save(awaiting, 1), "a late write took the row back"
    assert not await save(paid, 2), "a repeated write was written again"
    assert await row() == ("confirmed", 2, at)
    # A newer write that shows a later first payment keeps the first one seen.
    later = paid.model_copy(
        update={"status": OrderStatus.shipped, "paid_at": at + timedelta(hours=1)}
    )
    assert await save(later, 3)
    assert await row() == ("shipped", 3, at)


async def test_the_list_needs_the_ops_scope_and_refuses_bad_input(order_api: Api):
    created = await order_api.http.post(
        "/v1/api-keys",
        json={"name": uid("marketer"), "scopes": ["analytics:read"]},
        headers=auth(ADMIN_KEY),
    )
    marketer = created.json()["key"]

    assert (await order_api.get("/v1/orders", key=marketer)).status_code == 403
    bad_cursor = await order_api.get("/v1/orders?cursor=bm9wZQ")
    assert bad_cursor.status_code == 422
    assert bad_cursor.json()["fields"][0]["loc"] == ["query", "cursor"]
    nul = b"2026-01-01T00:00:00+00:00|ord\x001"
    nul_cursor = await order_api.get(f"/v1/orders?cursor={base64.urlsafe_b64encode(nul).decode()}")
    assert nul_cursor.status_code == 422, nul_cursor.text
    bad_status = await order_api.get("/v1/orders?status=teleported")
    assert bad_status.status_code == 422
    assert bad_status.json()["fields"][0]["loc"] == ["query", "status"]
