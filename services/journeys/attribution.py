"""Who gets the credit for an order (README "Attribution and holdouts"): the last touch,
where a click beats an open beats a delivery beats a plain send, within the message's
channel window (the rule's own for that channel, else the attribution model's). One order
is credited to at most one message across all rules: ``attributions`` is keyed by order.

``recompute`` applies the model again to past orders after it changed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import delete, func, select, tuple_, union
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.attribution import MAX_WINDOW, Windows, window_for
from contracts.errors import Unprocessable
from contracts.fields import minor_units
from db.models import Attribution, Coupon, Event, JourneyOrder, Message, RuleVersion

_RECEIVED = ("sent", "delivered", "opened", "clicked")
_RULE_WINDOWS: TypeAdapter[Windows | None] = TypeAdapter(Windows | None)
# The most orders one recompute covers: it runs inside the request that asks for it.
RECOMPUTE_LIMIT = 5000


async def placed(session: AsyncSession, order_id: str) -> Event | None:
    """The order's ``order.placed`` event (what it cost, when, in which currency)."""
    return await session.scalar(
        select(Event).where(Event.order_id == order_id, Event.type == "order.placed").limit(1)
    )


def touch(message: Message, ordered_at: datetime) -> tuple[int, datetime]:
    """How strongly the message had engaged the customer when they ordered (3 clicked,
    2 opened, 1 delivered, 0 sent) and when that engagement happened."""
    for level, at in ((3, message.clicked_at), (2, message.opened_at), (1, message.delivered_at)):
        if at is not None and at <= ordered_at:
            return level, at
    assert message.sent_at is not None
    return 0, message.sent_at


async def credited_message(
    session: AsyncSession, customer_id: str, ordered_at: datetime, windows: Mapping[Any, timedelta]
) -> Message | None:
    """The message the model credits an order with, or None when none is in its window."""
    candidates = list(
        await session.scalars(
            select(Message).where(
                Message.customer_id == customer_id,
                Message.kind == "marketing",
                Message.status.in_(_RECEIVED),
                Message.sent_at.is_not(None),
                Message.sent_at <= ordered_at,
                Message.sent_at >= ordered_at - MAX_WINDOW,
            )
        )
    )
    pins = {(m.rule_id, m.rule_version) for m in candidates if m.rule_id and m.rule_version}
    overrides: dict[tuple[str, int], Any] = {}
    if pins:
        for version in await session.scalars(
            select(RuleVersion).where(tuple_(RuleVersion.rule_id, RuleVersion.version).in_(pins))
        ):
            raw = version.definition.get("attribution_windows")
            overrides[(version.rule_id, version.version)] = _RULE_WINDOWS.validate_python(raw)
    best: tuple[int, datetime, datetime, str] | None = None
    chosen = None
    for message in candidates:
        assert message.sent_at is not None
        rule = overrides.get((message.rule_id or "", message.rule_version or 0))
        window = window_for(message.channel, windows, rule)
        if window is None or ordered_at - message.sent_at > window:
            continue
        rank = (*touch(message, ordered_at), message.sent_at, str(message.id))
        if best is None or rank > best:
            best, chosen = rank, message
    return chosen


async def attribute(
    session: AsyncSession,
    *,
    order_id: str,
    customer_id: str,
    cart_id: str | None,
    windows: Mapping[Any, timedelta],
) -> Attribution | None:
    """Record (once) which message an order is credited to, with its revenue and the
    discount the customer used; None when no message falls in its window."""
    existing = await session.get(Attribution, order_id)
    if existing is not None:
        return existing
    order = await placed(session, order_id)
    if order is None:
        return None
    data = order.payload.get("data", {})
    ordered_at = order.occurred_at
    message = await credited_message(session, customer_id, ordered_at, windows)
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


@dataclass(frozen=True)
class Recomputed:
    orders: int  # orders whose credit was decided again
    moved: int  # of those, credited to another message (or none) than before


async def recompute(
    session: AsyncSession,
    windows: Mapping[Any, timedelta],
    start: datetime | None = None,
    end: datetime | None = None,
) -> Recomputed:
    """Decide the credit of past orders again under ``windows``: every order placed in
    [start, end) that a journey asked credit for (one credited, or one a journey saw as
    its goal). One batch in the caller's transaction, idempotent: run twice, the second
    changes nothing. At most ``RECOMPUTE_LIMIT`` orders; more is a 422 asking for a
    shorter range."""
    sources = union(
        select(Attribution.order_id, Attribution.customer_id, Attribution.cart_id).where(
            *_between(Attribution.ordered_at, start, end)
        ),
        select(JourneyOrder.order_id, JourneyOrder.customer_id, JourneyOrder.cart_id).where(
            *_between(JourneyOrder.ordered_at, start, end)
        ),
    ).subquery()
    total = await session.scalar(select(func.count(func.distinct(sources.c.order_id))))
    if (total or 0) > RECOMPUTE_LIMIT:
        raise Unprocessable(
            f"{total} orders in that range; one recompute covers at most {RECOMPUTE_LIMIT}",
            fields=[{"loc": ["body", "recompute"], "msg": "choose a shorter range"}],
        )
    rows = (
        await session.execute(
            select(sources.c.order_id, sources.c.customer_id, sources.c.cart_id)
            .ext(distinct_on(sources.c.order_id))
            .order_by(sources.c.order_id, sources.c.cart_id.is_(None))
        )
    ).all()
    orders = [row.order_id for row in rows]
    credited = await session.execute(
        select(Attribution.order_id, Attribution.message_id).where(Attribution.order_id.in_(orders))
    )
    before: dict[str, Any] = dict(credited.all())
    await session.execute(delete(Attribution).where(Attribution.order_id.in_(orders)))
    moved = 0
    for row in rows:
        credit = await attribute(
            session,
            order_id=row.order_id,
            customer_id=row.customer_id,
            cart_id=row.cart_id,
            windows=windows,
        )
        if (credit.message_id if credit else None) != before.get(row.order_id):
            moved += 1
    return Recomputed(orders=len(rows), moved=moved)


def _between(column: Any, start: datetime | None, end: datetime | None) -> list[Any]:
    return [
        *([column >= start] if start is not None else []),
        *([column < end] if end is not None else []),
    ]


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
