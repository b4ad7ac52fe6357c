"""Computed customer attributes: what conditions, segments and templates read of a customer.

One pure function builds them from the profile and its ``customer_stats`` row, so that a
single customer's context (journeys) and a page of thousands (segment members) agree to
the letter; the few facts that need their own query take a list of customers at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import CoPurchase, Customer, CustomerStats, Message, ProductPurchase

RECOMMENDATIONS = 3
_CENTS = Decimal("0.01")
_RATE = Decimal("0.0001")


def _plain(value: Decimal) -> str:
    """ "0.2500" -> "0.25", "1.0000" -> "1": rates read as people write them."""
    return format(value.normalize(), "f")


def attributes(
    customer: Customer,
    stats: CustomerStats | None,
    now: datetime,
    preferred_channel: str | None = None,
) -> dict[str, Any]:
    spent: dict[str, str] = dict(stats.spent or {}) if stats else {}
    by_currency: dict[str, int] = dict(stats.orders_by_currency or {}) if stats else {}
    orders = stats.orders_count if stats else 0
    # In the customer's own currency: Sutra never converts.
    currency = customer.currency or (next(iter(spent)) if len(spent) == 1 else None)
    total = Decimal(spent.get(currency or "", "0"))
    in_currency = int(by_currency.get(currency or "", 0))
    last = stats.last_order_at if stats else None
    first = stats.first_order_at if stats else None
    coupon_orders = stats.coupon_orders if stats else 0
    return {
        "id": customer.id,
        "email": customer.email,
        "phone": customer.phone,
        "name": customer.name,
        "locale": customer.locale,
        "timezone": customer.timezone,
        "country": customer.country or (stats.country if stats else None),
        "city": stats.city if stats else None,
        "currency": customer.currency,
        "orders_count": orders,
        "total_spent": format(total, "f"),
        "spent": spent,
        "average_order_value": (
            format((total / in_currency).quantize(_CENTS), "f") if in_currency else None
        ),
        "coupon_usage_rate": (
            _plain((Decimal(coupon_orders) / orders).quantize(_RATE)) if orders else "0"
        ),
        "first_order_at": first.isoformat() if first else None,
        "last_order_at": last.isoformat() if last else None,
        "days_since_last_order": (now - last).days if last else None,
        "preferred_channel": preferred_channel or (stats.preferred_channel if stats else None),
        "first_seen_at": customer.first_seen_at.isoformat(),
        "consent": {
            "email": customer.consent_email,
            "sms": customer.consent_sms,
            "whatsapp": customer.consent_whatsapp,
        },
        "attributes": dict(customer.attributes or {}),
    }


async def preferred_channels(session: AsyncSession, customer_ids: Sequence[str]) -> dict[str, str]:
    """Per customer, the channel with most messages delivered, opened or clicked (the
    most recent engagement breaks a tie): computed on read from the message ledger."""
    if not customer_ids:
        return {}
    engaged = or_(
        Message.delivered_at.is_not(None),
        Message.opened_at.is_not(None),
        Message.clicked_at.is_not(None),
    )
    rows = await session.execute(
        select(
            Message.customer_id,
            Message.channel,
            func.count().label("n"),
            func.max(Message.created_at).label("latest"),
        )
        .where(Message.customer_id.in_(customer_ids), Message.channel.is_not(None), engaged)
        .group_by(Message.customer_id, Message.channel)
    )
    best: dict[str, tuple[int, datetime, str]] = {}
    for customer_id, channel, n, latest in rows.all():
        if channel is None:
            continue
        if customer_id not in best or (n, latest) > best[customer_id][:2]:
            best[customer_id] = (n, latest, channel)
    return {cid: channel for cid, (_, _, channel) in best.items()}


async def recommendations(session: AsyncSession, customer_id: str) -> list[dict[str, Any]]:
    """The products most bought by customers who bought what this customer bought,
    excluding what they own: "customers who bought X also bought Y"."""
    owned = select(ProductPurchase.sku).where(ProductPurchase.customer_id == customer_id)
    score = func.sum(CoPurchase.customers)
    top = list(
        (
            await session.execute(
                select(CoPurchase.other_sku, score)
                .where(CoPurchase.sku.in_(owned), CoPurchase.other_sku.not_in(owned))
                .group_by(CoPurchase.other_sku)
                .order_by(score.desc(), CoPurchase.other_sku)
                .limit(RECOMMENDATIONS)
            )
        ).all()
    )
    if not top:
        return []
    skus = [sku for sku, _ in top]
    names = dict(
        (
            await session.execute(
                select(ProductPurchase.sku, ProductPurchase.name)
                .where(ProductPurchase.sku.in_(skus))
                .ext(distinct_on(ProductPurchase.sku))
                .order_by(ProductPurchase.sku, ProductPurchase.purchased_at.desc())
            )
        ).all()
    )
    return [{"sku": sku, "name": names.get(sku)} for sku in skus]
