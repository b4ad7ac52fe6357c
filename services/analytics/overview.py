"""The shop at a glance over a period: what Sutra's messages earned beside all the shop's
order revenue, the carts it recovered, what it sent per channel per day, how those sends
fared, and how many journeys are running now.

Days are the shop's (``Period``); money stays per currency (Sutra never converts). Test
runs of rules are left out, as in the rule analytics.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Date, Numeric, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Attribution, Event, JourneyEntry, Message, Suppression
from services.analytics.period import Period

CHANNELS = ("email", "sms", "whatsapp")


def _day(column: Any, period: Period) -> ColumnElement[date]:
    """The shop-local calendar day of a timestamp column."""
    return cast(func.timezone(period.zone.key, column), Date)


def _within(column: Any, period: Period) -> ColumnElement[bool]:
    return (column >= period.start_utc) & (column < period.end_utc)


async def shop_overview(session: AsyncSession, period: Period) -> dict[str, Any]:
    return {
        "period": period.describe(),
        "revenue": await _revenue(session, period),
        "carts": await _carts(session, period),
        "messages": await _messages(session, period),
        "unsubscribes": await _unsubscribes(session, period),
        "journeys_running": await session.scalar(
            select(func.count())
            .select_from(JourneyEntry)
            .where(JourneyEntry.exited_at.is_(None), JourneyEntry.test.is_(False))
        ),
    }


async def _revenue(session: AsyncSession, period: Period) -> dict[str, Any]:
    """Attributed revenue per currency and day, and the shop's whole order revenue (every
    ``order.placed`` accepted in the period) beside it."""
    day = _day(Attribution.ordered_at, period)
    rows = await session.execute(
        select(day, Attribution.currency, func.count(), func.sum(Attribution.revenue))
        .where(_within(Attribution.ordered_at, period), Attribution.rule_id.is_not(None))
        .group_by(day, Attribution.currency)
    )
    by_day: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    attributed: dict[str, Decimal] = defaultdict(Decimal)
    orders = 0
    for when, currency, count, amount in rows.all():
        by_day[currency][when.isoformat()] += amount
        attributed[currency] += amount
        orders += count
    total = cast(Event.payload["data"]["total"].astext, Numeric(18, 4))
    currency = Event.payload["data"]["currency"].astext
    shop = await session.execute(
        select(currency, func.count(), func.sum(total))
        .where(Event.type == "order.placed", _within(Event.occurred_at, period))
        .group_by(currency)
    )
    all_orders: dict[str, tuple[int, Decimal]] = {c: (n, a) for c, n, a in shop.all() if c}
    currencies = sorted(set(attributed) | set(all_orders))
    return {
        "attributed_orders": orders,
        "shop_orders": sum(n for n, _ in all_orders.values()),
        "currencies": [
            {
                "currency": c,
                "attributed": attributed.get(c, Decimal(0)),
                "shop": all_orders.get(c, (0, Decimal(0)))[1],
                "share": (
                    attributed[c] / all_orders[c][1]
                    if c in attributed and c in all_orders and all_orders[c][1]
                    else None
                ),
            }
            for c in currencies
        ],
        "by_day": {
            c: [by_day[c].get(d.isoformat(), Decimal(0)) for d in period.days] for c in currencies
        },
    }


async def _carts(session: AsyncSession, period: Period) -> dict[str, Any]:
    """Carts that entered a journey in the period, and how many of them were recovered (an
    order for the cart credited to one of the journey's messages)."""
    entered = await session.scalar(
        select(func.count(func.distinct(JourneyEntry.cart_id))).where(
            JourneyEntry.cart_id.is_not(None),
            JourneyEntry.test.is_(False),
            _within(JourneyEntry.entered_at, period),
        )
    )
    recovered = await session.scalar(
        select(func.count(func.distinct(Attribution.cart_id))).where(
            Attribution.cart_id.in_(
                select(JourneyEntry.cart_id).where(
                    JourneyEntry.cart_id.is_not(None),
                    JourneyEntry.test.is_(False),
                    _within(JourneyEntry.entered_at, period),
                )
            ),
            Attribution.rule_id.is_not(None),
        )
    )
    entered, recovered = entered or 0, recovered or 0
    return {
        "abandoned": entered,
        "recovered": recovered,
        "recovery_rate": recovered / entered if entered else None,
    }


async def _messages(session: AsyncSession, period: Period) -> dict[str, Any]:
    """Sends per channel per day (by when they were sent) and how the period's messages
    fared: delivered, bounced, failed, suppressed."""
    day = _day(Message.sent_at, period)
    rows = await session.execute(
        select(day, Message.channel, func.count())
        .where(_within(Message.sent_at, period), Message.channel.is_not(None))
        .group_by(day, Message.channel)
    )
    per_day: dict[str, dict[str, int]] = defaultdict(dict)
    for when, channel, count in rows.all():
        per_day[str(channel)][when.isoformat()] = count
    channels = [c for c in CHANNELS if c in per_day] + sorted(set(per_day) - set(CHANNELS))
    created = _within(Message.created_at, period)
    totals = (
        await session.execute(
            select(
                func.count(Message.sent_at),
                func.count(Message.delivered_at),
                func.count().filter(Message.status == "bounced"),
                func.count().filter(Message.status == "failed"),
                func.count().filter(Message.status == "suppressed"),
            ).where(created)
        )
    ).one()
    sent, delivered, bounced, failed, suppressed = totals
    return {
        "by_day": {c: [per_day[c].get(d.isoformat(), 0) for d in period.days] for c in channels},
        "sent": sent,
        "delivered": delivered,
        "bounced": bounced,
        "failed": failed,
        "suppressed": suppressed,
        "delivery_rate": delivered / sent if sent else None,
        "bounce_rate": bounced / sent if sent else None,
    }


async def _unsubscribes(session: AsyncSession, period: Period) -> dict[str, int]:
    """Opt-outs and undeliverable addresses recorded in the period, by reason
    (unsubscribe, stop, bounce, spamreport, ...)."""
    rows = await session.execute(
        select(Suppression.reason, func.count())
        .where(_within(Suppression.created_at, period))
        .group_by(Suppression.reason)
    )
    return {str(reason): int(count) for reason, count in sorted(rows.all())}
