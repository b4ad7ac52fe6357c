"""Who gets the credit for an order: the last marketing message the customer received
within the attribution window before it (last touch)."""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.fields import minor_units
from db.models import Attribution, Coupon, Event, Message

_RECEIVED = ("sent", "delivered", "opened", "clicked")


async def attribute(
    session: AsyncSession,
    *,
    order_id: str,
    customer_id: str,
    cart_id: str | None,
    window: timedelta,
) -> Attribution | None:
    """Record (once) which message an order is credited to, with its revenue and the
    discount the customer used; None when no message falls in the window."""
    existing = await session.get(Attribution, order_id)
    if existing is not None:
        return existing
    order = await session.scalar(
        select(Event).where(Event.order_id == order_id, Event.type == "order.placed").limit(1)
    )
    if order is None:
        return None
    data = order.payload.get("data", {})
    ordered_at = order.occurred_at
    message = await session.scalar(
        select(Message)
        .where(
            Message.customer_id == customer_id,
            Message.kind == "marketing",
            Message.status.in_(_RECEIVED),
            Message.sent_at.is_not(None),
            Message.sent_at <= ordered_at,
            Message.sent_at >= ordered_at - window,
        )
        .order_by(Message.sent_at.desc())
        .limit(1)
    )
    if message is None:
        return None
    currency = str(data.get("currency"))
    revenue = Decimal(str(data.get("total", "0")))
    coupon, discount = await _discount(session, data, currency, customer_id, cart_id)
    await session.execute(
        insert(Attribution)
        .values(
            order_id=order_id,
            customer_id=customer_id,
            cart_id=cart_id,
            message_id=message.id,
            rule_id=message.rule_id,
            rule_version=message.rule_version,
            step=message.step,
            variant=(message.details or {}).get("variant"),
            channel=message.channel,
            revenue=revenue,
            currency=currency,
            discount=discount,
            coupon_code=coupon,
            ordered_at=ordered_at,
        )
        .on_conflict_do_nothing()
    )
    return await session.get(Attribution, order_id)


async def _discount(
    session: AsyncSession,
    data: dict[str, object],
    currency: str,
    customer_id: str,
    cart_id: str | None,
) -> tuple[str | None, Decimal]:
    """The discount the order used: as the shop reports it, else from our coupon."""
    code = data.get("coupon_code")
    coupon = None
    if isinstance(code, str):
        coupon = await session.get(Coupon, code)
    elif cart_id is not None:
        coupon = await session.scalar(
            select(Coupon)
            .where(Coupon.cart_id == cart_id, Coupon.customer_id == customer_id)
            .where(Coupon.status == "redeemed")
            .order_by(Coupon.redeemed_at.desc())
            .limit(1)
        )
    reported = data.get("discount_total")
    if reported is not None:
        return (coupon.code if coupon else code if isinstance(code, str) else None), Decimal(
            str(reported)
        )
    if coupon is None:
        return None, Decimal(0)
    items = data.get("items")
    subtotal = sum(
        (
            Decimal(str(i["unit_price"])) * int(i["quantity"])
            for i in (items if isinstance(items, list) else [])
            if isinstance(i, dict)
        ),
        Decimal(0),
    )
    exponent = Decimal(1).scaleb(-minor_units(currency))
    discount = (subtotal * coupon.percent_off / 100).quantize(exponent, rounding=ROUND_HALF_UP)
    return coupon.code, discount
