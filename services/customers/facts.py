"""Customer facts kept up to date as events are accepted, in the intake transaction.

Segments, conditions and time triggers read these tables instead of scanning the event
log. Intake hands over only events never seen before, but a shop may re-send an order
under a new event id and events arrive out of order, so: an order counts once (its
product lines are the record of it), first/last order times are min/max, the latest
order's shipping wins, and ``rebought_at`` / delivery are recomputed whichever comes first.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import DateTime, func, literal, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from db.models import (
    BackInStockSubscription,
    CoPurchase,
    CustomerStats,
    ProductInterest,
    ProductPurchase,
)
from db.models import Event as EventRow

CART_TYPES = ("cart.updated", "checkout.started")
_COUPON_KEYS = ("coupon_code", "discount_code")
_DURATION = TypeAdapter(timedelta)
_MAX_REPLENISH_DAYS = 3650


async def record(session: AsyncSession, accepted_events: Sequence[Any]) -> None:
    """Fold the accepted events into customer stats, purchases, co-purchases, interests
    and back-in-stock subscriptions."""
    events = sorted(accepted_events, key=lambda e: (e.occurred_at, e.id))
    placed = [e for e in events if e.type == "order.placed"]
    if placed:
        new_orders = await _record_purchases(session, placed)
        await _record_stats(session, new_orders)
    delivered: dict[str, datetime] = {}
    for event in events:
        if event.type == "order.delivered":
            delivered.setdefault(event.data.order_id, event.occurred_at)
    await _record_deliveries(session, delivered)
    await _record_interests(session, [e for e in events if e.type in CART_TYPES])
    await _record_subscriptions(
        session, [e for e in events if e.type == "back_in_stock.subscribed"]
    )


def replenish_days(value: Any) -> int | None:
    """A line's ``replenish_after``: whole days from an int or an ISO 8601 duration
    ("P30D", "P4W"); anything unreadable means "not a consumable" rather than an error,
    because the order itself is valid and must be accepted."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        days = value
    elif isinstance(value, str) and re.fullmatch(r"\s*P[0-9WDTHMS.]+\s*", value):
        try:
            delta = _DURATION.validate_python(value.strip())
        except ValidationError:
            return None
        days = -(-int(delta.total_seconds()) // 86400)  # part of a day is a day
    else:
        return None
    return days if 0 < days <= _MAX_REPLENISH_DAYS else None


def used_coupon(data: Any) -> bool:
    extra = data.model_extra or {}
    if any(isinstance(extra.get(k), str) and extra[k].strip() for k in _COUPON_KEYS):
        return True
    coupons = extra.get("coupons")
    return isinstance(coupons, list) and len(coupons) > 0


async def _record_purchases(session: AsyncSession, placed: list[Any]) -> list[Any]:
    """Insert each new order's product lines; return the orders not recorded before."""
    by_order: dict[str, Any] = {}
    for event in placed:
        by_order.setdefault(event.data.order_id, event)
    # An order already on record, even re-sent with other lines, is not a new order.
    known = await session.scalars(
        select(ProductPurchase.order_id).where(ProductPurchase.order_id.in_(by_order)).distinct()
    )
    for order_id in known:
        del by_order[order_id]
    if not by_order:
        return []
    rows: list[dict[str, Any]] = []
    for event in by_order.values():
        lines: dict[str, dict[str, Any]] = {}
        for item in event.data.items:
            if item.sku in lines:  # two lines of one sku (sizes, say): one purchase
                lines[item.sku]["quantity"] += item.quantity
                continue
            lines[item.sku] = {
                "order_id": event.data.order_id,
                "sku": item.sku,
                "customer_id": event.customer.id,
                "product_id": item.product_id,
                "name": item.name,
                "category": item.category,
                "quantity": item.quantity,
                "purchased_at": event.occurred_at,
                "replenish_after_days": replenish_days(
                    (item.model_extra or {}).get("replenish_after")
                ),
            }
        rows.extend(lines.values())
    customer_ids = sorted({e.customer.id for e in by_order.values()})
    owned_before = await _owned(session, customer_ids)
    rows.sort(key=lambda r: (r["order_id"], r["sku"]))
    result = await session.execute(
        insert(ProductPurchase)
        .on_conflict_do_nothing()
        .returning(ProductPurchase.order_id, ProductPurchase.sku, ProductPurchase.customer_id),
        rows,
    )
    inserted = result.all()
    if not inserted:
        return []
    new_order_ids = {order_id for order_id, _, _ in inserted}
    bought: dict[str, set[str]] = defaultdict(set)
    for _, sku, customer_id in inserted:
        bought[customer_id].add(sku)

    await _mark_rebought(session, sorted({(c, s) for _, s, c in inserted}))
    await _count_co_purchases(session, owned_before, bought)
    # A delivery reported before its order: apply it now that the lines exist.
    early = await session.execute(
        select(EventRow.order_id, func.min(EventRow.occurred_at))
        .where(EventRow.order_id.in_(new_order_ids), EventRow.type == "order.delivered")
        .group_by(EventRow.order_id)
    )
    await _record_deliveries(session, {oid: at for oid, at in early.all() if oid is not None})
    return [e for e in by_order.values() if e.data.order_id in new_order_ids]


async def _owned(session: AsyncSession, customer_ids: list[str]) -> dict[str, set[str]]:
    owned: dict[str, set[str]] = defaultdict(set)
    rows = await session.execute(
        select(ProductPurchase.customer_id, ProductPurchase.sku)
        .where(ProductPurchase.customer_id.in_(customer_ids))
        .distinct()
    )
    for customer_id, sku in rows.all():
        owned[customer_id].add(sku)
    return owned


async def _mark_rebought(session: AsyncSession, pairs: list[tuple[str, str]]) -> None:
    """Each line's ``rebought_at`` is the customer's next purchase of the same sku:
    recomputed for the touched (customer, sku) pairs, so arrival order does not matter."""
    later = aliased(ProductPurchase)
    next_purchase = (
        select(func.min(later.purchased_at))
        .where(
            later.customer_id == ProductPurchase.customer_id,
            later.sku == ProductPurchase.sku,
            later.purchased_at > ProductPurchase.purchased_at,
        )
        .scalar_subquery()
    )
    await session.execute(
        update(ProductPurchase)
        .where(tuple_(ProductPurchase.customer_id, ProductPurchase.sku).in_(pairs))
        .values(rebought_at=next_purchase)
        .execution_options(synchronize_session=False)
    )


async def _count_co_purchases(
    session: AsyncSession, owned_before: dict[str, set[str]], bought: dict[str, set[str]]
) -> None:
    """Per customer, not per order: a sku bought for the first time pairs once with every
    other sku the customer owns, so a pair's count is the number of customers with both."""
    increments: Counter[tuple[str, str]] = Counter()
    for customer_id, skus in bought.items():
        old = owned_before.get(customer_id, set())
        new = skus - old
        for sku in new:
            for other in old | new:
                if other != sku:
                    increments[(sku, other)] += 1
            for other in old:
                increments[(other, sku)] += 1
    if not increments:
        return
    stmt = insert(CoPurchase)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[CoPurchase.sku, CoPurchase.other_sku],
            set_={"customers": CoPurchase.customers + stmt.excluded.customers},
        ),
        [{"sku": s, "other_sku": o, "customers": n} for (s, o), n in sorted(increments.items())],
    )


async def _record_stats(session: AsyncSession, orders: list[Any]) -> None:
    by_customer: dict[str, list[Any]] = defaultdict(list)
    for event in orders:
        by_customer[event.customer.id].append(event)
    if not by_customer:
        return
    ids = sorted(by_customer)  # one lock order for concurrent batches
    await session.execute(
        insert(CustomerStats).on_conflict_do_nothing(index_elements=[CustomerStats.customer_id]),
        [{"customer_id": cid} for cid in ids],
    )
    rows = await session.scalars(
        select(CustomerStats)
        .where(CustomerStats.customer_id.in_(ids))
        .order_by(CustomerStats.customer_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    for row in rows:
        for event in by_customer[row.customer_id]:
            _count_order(row, event)


def _count_order(row: CustomerStats, event: Any) -> None:
    data, at = event.data, event.occurred_at
    spent = dict(row.spent or {})
    spent[data.currency] = format(Decimal(spent.get(data.currency, "0")) + data.total, "f")
    row.spent = spent
    by_currency = dict(row.orders_by_currency or {})
    by_currency[data.currency] = int(by_currency.get(data.currency, 0)) + 1
    row.orders_by_currency = by_currency
    row.orders_count = (row.orders_count or 0) + 1
    if used_coupon(data):
        row.coupon_orders = (row.coupon_orders or 0) + 1
    if row.last_order_at is None or at >= row.last_order_at:
        row.last_order_at = at
        shipping = data.shipping
        if shipping is not None:
            row.city = shipping.city or row.city
            row.country = shipping.country or row.country
    if row.first_order_at is None or at < row.first_order_at:
        row.first_order_at = at
        row.first_order_md = at.month * 100 + at.day  # occurred_at is UTC


async def _record_deliveries(session: AsyncSession, delivered: dict[str, datetime]) -> None:
    """The first delivery of an order starts its lines' replenishment clocks."""
    for order_id, at in sorted(delivered.items()):
        when = literal(at, DateTime(timezone=True))
        await session.execute(
            update(ProductPurchase)
            .where(
                ProductPurchase.order_id == order_id,
                or_(ProductPurchase.delivered_at.is_(None), ProductPurchase.delivered_at > at),
            )
            .values(
                delivered_at=when,
                # NULL days (not a consumable) make NULL: no reminder.
                replenish_due_at=when
                + func.make_interval(0, 0, 0, ProductPurchase.replenish_after_days),
            )
            .execution_options(synchronize_session=False)
        )


def _latest(sightings: Iterable[tuple[str, str, datetime]]) -> dict[tuple[str, str], datetime]:
    """The newest time per (sku, customer): one row each, as one upsert allows."""
    latest: dict[tuple[str, str], datetime] = {}
    for sku, customer_id, at in sightings:
        if (sku, customer_id) not in latest or at > latest[(sku, customer_id)]:
            latest[(sku, customer_id)] = at
    return latest


async def _record_interests(session: AsyncSession, cart_events: list[Any]) -> None:
    latest = _latest(
        (item.sku, e.customer.id, e.occurred_at) for e in cart_events for item in e.data.items
    )
    if not latest:
        return
    stmt = insert(ProductInterest)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[ProductInterest.sku, ProductInterest.customer_id],
            set_={
                "kind": "carted",
                "last_at": func.greatest(ProductInterest.last_at, stmt.excluded.last_at),
            },
        ),
        [
            {"sku": sku, "customer_id": cid, "kind": "carted", "last_at": at}
            for (sku, cid), at in sorted(latest.items())
        ],
    )


async def _record_subscriptions(session: AsyncSession, subscribed: list[Any]) -> None:
    """Subscribing again after being notified waits for the next restock; subscribing
    again while still waiting changes nothing (no second notice)."""
    latest = _latest((e.data.sku, e.customer.id, e.occurred_at) for e in subscribed)
    if not latest:
        return
    table = BackInStockSubscription
    stmt = insert(table)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[table.sku, table.customer_id],
            set_={
                "subscribed_at": stmt.excluded.subscribed_at,
                "notified_at": None,
                "notified_event_id": None,
            },
            where=table.notified_at.is_not(None)
            & (table.notified_at < stmt.excluded.subscribed_at),
        ),
        [
            {"sku": sku, "customer_id": cid, "subscribed_at": at}
            for (sku, cid), at in sorted(latest.items())
        ],
    )
