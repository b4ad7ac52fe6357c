"""Customer facts maintained at intake: stats, purchases, deliveries, co-purchases,
interests and back-in-stock subscriptions, and the attributes customer_context computes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config.settings import Settings
from contracts.events import EVENT_ADAPTER
from db.models import (
    BackInStockSubscription,
    CoPurchase,
    CustomerStats,
    Message,
    ProductInterest,
    ProductPurchase,
)
from services.customers import profiles
from services.intake.service import Status, ingest
from tests.conftest import make_settings
from tests.factories import cart_updated, customer, uid


@pytest.fixture
def intake_settings(database_url: str) -> Settings:
    # Intake never talks to Temporal: no server needed to accept events.
    return make_settings(database_url, "127.0.0.1:1", "tq-facts")


class Shop:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings):
        self.sessionmaker = sessionmaker
        self.settings = settings

    async def send(self, *events: dict[str, Any]) -> list[Status]:
        async with self.sessionmaker() as session, session.begin():
            parsed = [EVENT_ADAPTER.validate_python(e) for e in events]
            return await ingest(session, parsed, settings=self.settings, api_key_id=None)

    async def context(self, customer_id: str, now: datetime | None = None) -> dict[str, Any]:
        async with self.sessionmaker() as session:
            return await profiles.customer_context(session, customer_id, now=now)

    async def lines(self, customer_id: str) -> list[ProductPurchase]:
        async with self.sessionmaker() as session:
            rows = await session.scalars(
                select(ProductPurchase)
                .where(ProductPurchase.customer_id == customer_id)
                .order_by(ProductPurchase.purchased_at, ProductPurchase.sku)
            )
            return list(rows)


@pytest.fixture
def shop(sessionmaker: async_sessionmaker[AsyncSession], intake_settings: Settings) -> Shop:
    return Shop(sessionmaker, intake_settings)


def line(sku: str, price: str = "1000.00", name: str | None = None, **extra: Any) -> dict:
    return {
        "sku": sku,
        "name": name or f"Product {sku}",
        "quantity": 1,
        "unit_price": price,
        **extra,
    }


def order(
    customer_id: str,
    at: str,
    items: list[dict[str, Any]],
    *,
    total: str | None = None,
    currency: str = "PKR",
    order_id: str | None = None,
    city: str = "Lahore",
    country: str = "PK",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": uid("evt"),
        "type": "order.placed",
        "occurred_at": at,
        "customer": customer(customer_id),
        "data": {
            "order_id": order_id or uid("ord"),
            "items": items,
            "total": total or "1000.00",
            "currency": currency,
            "payment_type": "cod",
            "shipping": {"city": city, "country": country},
            **extra,
        },
    }


def delivered(order_id: str, at: str) -> dict[str, Any]:
    return {
        "id": uid("evt"),
        "type": "order.delivered",
        "occurred_at": at,
        "data": {"order_id": order_id},
    }


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_orders_add_up_per_currency_exactly_with_coupon_rate(shop: Shop):
    cid = uid("c")
    await shop.send(
        order(
            cid,
            "2026-01-05T10:00:00Z",
            [line("A")],
            total="40.00",
            currency="USD",
            coupons=["WELCOME10"],
        ),
        order(cid, "2026-02-01T10:00:00Z", [line("B")], total="1000.10", coupon_code="SAVE5"),
        order(cid, "2026-03-01T10:00:00Z", [line("C")], total="2000.20"),
    )

    ctx = await shop.context(cid, now=utc("2026-03-11T12:00:00Z"))

    assert ctx["orders_count"] == 3
    assert ctx["spent"] == {"USD": "40.00", "PKR": "3000.30"}  # exact: no float drift
    assert ctx["currency"] == "PKR"  # the newest order's currency is the customer's
    assert ctx["total_spent"] == "3000.30"
    assert ctx["average_order_value"] == "1500.15"  # over the 2 PKR orders only
    assert ctx["coupon_usage_rate"] == "0.6667"
    assert ctx["first_order_at"] == "2026-01-05T10:00:00+00:00"
    assert ctx["last_order_at"] == "2026-03-01T10:00:00+00:00"
    assert ctx["days_since_last_order"] == 10
    assert ctx["city"] == "Lahore"


async def test_customer_without_orders_reads_as_none_bought(shop: Shop):
    cid = uid("c")
    await shop.send(cart_updated(customer_id=cid))

    ctx = await shop.context(cid)

    assert ctx["orders_count"] == 0
    assert ctx["total_spent"] == "0"
    assert ctx["coupon_usage_rate"] == "0"
    assert ctx["last_order_at"] is None
    assert ctx["days_since_last_order"] is None
    assert ctx["recommendations"] == []


async def test_orders_arriving_out_of_order_keep_first_last_and_latest_shipping(shop: Shop):
    cid = uid("c")
    # The newest order arrives first, then an older one from another city.
    await shop.send(order(cid, "2026-05-20T08:00:00Z", [line("A")], city="Karachi"))
    await shop.send(order(cid, "2026-04-02T08:00:00Z", [line("B")], city="Dubai", country="AE"))

    ctx = await shop.context(cid)

    assert ctx["first_order_at"] == "2026-04-02T08:00:00+00:00"
    assert ctx["last_order_at"] == "2026-05-20T08:00:00+00:00"
    assert (ctx["city"], ctx["country"]) == ("Karachi", "PK")
    async with shop.sessionmaker() as session:
        stats = await session.get(CustomerStats, cid)
    assert stats is not None
    assert stats.first_order_md == 402


async def test_an_order_resent_under_a_new_event_id_counts_once(shop: Shop):
    cid, oid = uid("c"), uid("ord")
    first = order(cid, "2026-01-01T00:00:00Z", [line("A")], total="500.00", order_id=oid)
    # Re-sent under a new event id, even with a line more: still the same order.
    again = {**first, "id": uid("evt"), "data": {**first["data"], "items": [line("A"), line("B")]}}

    assert await shop.send(first) == ["accepted"]
    assert await shop.send(again) == ["accepted"]  # a new event id: intake takes it

    ctx = await shop.context(cid)
    assert ctx["orders_count"] == 1
    assert ctx["total_spent"] == "500.00"


async def test_profile_country_wins_over_shipping_country(shop: Shop):
    cid = uid("c")
    event = order(cid, "2026-01-01T00:00:00Z", [line("A")], city="Dubai", country="AE")
    event["customer"]["country"] = "PK"
    await shop.send(event)

    ctx = await shop.context(cid)
    assert (ctx["country"], ctx["city"]) == ("PK", "Dubai")


async def test_delivery_sets_replenishment_due_and_a_repurchase_marks_rebought(shop: Shop):
    cid, oid = uid("c"), uid("ord")
    await shop.send(
        order(
            cid,
            "2026-06-01T09:00:00Z",
            [
                line("SHAMPOO", replenish_after="P30D"),
                line("SOAP", replenish_after=14),
                line("KURTA"),
                line("OIL", replenish_after="soon"),
            ],
            order_id=oid,
        )
    )
    await shop.send(delivered(oid, "2026-06-04T15:00:00Z"))

    lines = {p.sku: p for p in await shop.lines(cid)}
    arrived = utc("2026-06-04T15:00:00Z")
    assert all(p.delivered_at == arrived for p in lines.values())
    assert lines["SHAMPOO"].replenish_due_at == arrived + timedelta(days=30)
    assert lines["SOAP"].replenish_due_at == arrived + timedelta(days=14)
    assert lines["KURTA"].replenish_due_at is None  # not a consumable
    assert lines["OIL"].replenish_due_at is None  # unreadable: ignored, order kept
    assert all(p.rebought_at is None for p in lines.values())

    await shop.send(order(cid, "2026-07-01T09:00:00Z", [line("SHAMPOO")]))

    by_order = {(p.order_id, p.sku): p for p in await shop.lines(cid)}
    assert by_order[(oid, "SHAMPOO")].rebought_at == utc("2026-07-01T09:00:00Z")
    assert by_order[(oid, "SOAP")].rebought_at is None


async def test_delivery_reported_before_the_order_still_starts_the_clock(shop: Shop):
    cid, oid = uid("c"), uid("ord")
    await shop.send(delivered(oid, "2026-06-04T15:00:00Z"))
    await shop.send(
        order(cid, "2026-06-01T09:00:00Z", [line("SHAMPOO", replenish_after="P4W")], order_id=oid)
    )

    [shampoo] = await shop.lines(cid)
    assert shampoo.replenish_due_at == utc("2026-07-02T15:00:00Z")


async def test_an_older_purchase_arriving_late_is_marked_rebought(shop: Shop):
    cid = uid("c")
    await shop.send(order(cid, "2026-07-01T09:00:00Z", [line("SHAMPOO")]))
    await shop.send(order(cid, "2026-06-01T09:00:00Z", [line("SHAMPOO")]))

    older, newer = await shop.lines(cid)
    assert older.rebought_at == utc("2026-07-01T09:00:00Z")
    assert newer.rebought_at is None


async def test_recommendations_come_from_customers_who_bought_the_same(shop: Shop):
    x, y, z = uid("X"), uid("Y"), uid("Z")
    a, b, c, me = uid("c"), uid("c"), uid("c"), uid("c")
    await shop.send(
        order(a, "2026-01-01T00:00:00Z", [line(x), line(y, name="Silk dupatta")]),
        # Buying both again in a second order does not count a second customer.
        order(a, "2026-01-09T00:00:00Z", [line(x), line(y, name="Silk dupatta")]),
        order(b, "2026-01-02T00:00:00Z", [line(x)]),
    )
    await shop.send(order(b, "2026-01-03T00:00:00Z", [line(y, name="Silk dupatta")]))
    await shop.send(order(c, "2026-01-04T00:00:00Z", [line(x), line(z, name="Khussa")]))
    await shop.send(order(me, "2026-01-05T00:00:00Z", [line(x)]))

    async with shop.sessionmaker() as session:
        counts = dict(
            (
                await session.execute(
                    select(CoPurchase.other_sku, CoPurchase.customers).where(CoPurchase.sku == x)
                )
            ).all()
        )
    assert counts == {y: 2, z: 1}

    mine = (await shop.context(me))["recommendations"]
    assert mine == [{"sku": y, "name": "Silk dupatta"}, {"sku": z, "name": "Khussa"}]
    # c owns x and z: only y is left to recommend.
    assert (await shop.context(c))["recommendations"] == [{"sku": y, "name": "Silk dupatta"}]


async def test_carts_record_interest_and_subscriptions_renew_after_notice(shop: Shop):
    cid, sku = uid("c"), uid("SKU")
    await shop.send(
        cart_updated(customer_id=cid, occurred_at="2026-03-01T10:00:00Z", items=[line(sku)]),
    )
    await shop.send(
        cart_updated(
            customer_id=cid, occurred_at="2026-02-01T10:00:00Z", items=[line(sku)]
        ),  # older, late: keeps the newer time
    )

    def subscribe(at: str) -> dict[str, Any]:
        return {
            "id": uid("evt"),
            "type": "back_in_stock.subscribed",
            "occurred_at": at,
            "customer": customer(cid),
            "data": {"sku": sku},
        }

    await shop.send(subscribe("2026-03-02T10:00:00Z"))
    await shop.send(subscribe("2026-03-03T10:00:00Z"))  # still waiting: nothing changes

    async with shop.sessionmaker() as session:
        interest = await session.get(ProductInterest, (sku, cid))
        sub = await session.get(BackInStockSubscription, (sku, cid))
    assert interest is not None
    assert interest.kind == "carted"
    assert interest.last_at == utc("2026-03-01T10:00:00Z")
    assert sub is not None
    assert sub.subscribed_at == utc("2026-03-02T10:00:00Z")

    async with shop.sessionmaker() as session, session.begin():  # the restock notice
        await session.execute(
            update(BackInStockSubscription)
            .where(BackInStockSubscription.sku == sku)
            .values(notified_at=utc("2026-03-10T00:00:00Z"), notified_event_id="evt_restock")
        )
    await shop.send(subscribe("2026-03-12T10:00:00Z"))

    async with shop.sessionmaker() as session:
        sub = await session.get(BackInStockSubscription, (sku, cid))
    assert sub is not None
    assert (sub.subscribed_at, sub.notified_at, sub.notified_event_id) == (
        utc("2026-03-12T10:00:00Z"),
        None,
        None,
    )


async def test_preferred_channel_is_where_the_customer_engages_most(shop: Shop):
    cid = uid("c")
    await shop.send(cart_updated(customer_id=cid))
    now = datetime.now(UTC)

    def message(channel: str, **when: datetime) -> Message:
        return Message(
            key=uid("k"),
            customer_id=cid,
            channel=channel,
            template="t",
            kind="marketing",
            status="delivered",
            **when,
        )

    async with shop.sessionmaker() as session, session.begin():
        session.add_all(
            [
                message("email", delivered_at=now),
                message("whatsapp", delivered_at=now, opened_at=now),
                message("whatsapp", delivered_at=now, clicked_at=now),
                message("sms"),  # sent, never engaged
                message("sms"),
                message("sms"),
            ]
        )

    assert (await shop.context(cid))["preferred_channel"] == "whatsapp"
