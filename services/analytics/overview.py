"""The shop at a glance over a period: what Sutra earned beside what the shop sold, carts
recovered, messages sent per channel per day, deliverability, unsubscribes, and journeys
running now.

Days are the shop's (``Period``). Rehearsals (test runs of a rule) are left out everywhere.
Money is per currency, never summed across currencies.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, Numeric, and_, cast, false, func, or_, select, true
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from db.models import (
    Attribution,
    ConsentChange,
    Event,
    JourneyEntry,
    Message,
    MessageEvent,
    Suppression,
)
from services.analytics.period import Period
from services.analytics.snapshot import side_by_side

CHANNELS = ("email", "sms", "whatsapp")
# A cart journey ends "converted" when the cart itself was ordered, "ordered" when the
# customer ordered elsewhere and the rule exits on any order of theirs.
RECOVERED = ("converted", "ordered")
COMPLAINTS = ("spamreport",)


def _day(column: Any, period: Period) -> ColumnElement[date]:
    return cast(func.timezone(period.zone.key, column), Date)


def _within(column: Any, period: Period) -> ColumnElement[bool]:
    return and_(column >= period.start_utc, column < period.end_utc)


def _money(amount: Decimal) -> str:
    return str(amount.quantize(Decimal("0.01")))


async def overview(session: AsyncSession, period: Period) -> dict[str, Any]:
    """The figures, read by three groups of queries side by side on connections of their
    own that share one snapshot (on two CPUs a month's overview answers in about half the
    time)."""
    (
        (sent, unsent),
        (ordered, carts, unsubscribes),
        (credited, suppressed, running),
    ) = await side_by_side(
        session,
        lambda s: _messages(s, period),
        lambda s: _shop(s, period),
        lambda s: _sutra(s, period),
    )
    return _compose(
        period, ordered, credited, sent, unsent, carts, unsubscribes, suppressed, running
    )


async def _messages(session: AsyncSession, period: Period) -> tuple[Any, Any]:
    return await _sent(session, period), await _unsent(session, period)


async def _shop(session: AsyncSession, period: Period) -> tuple[Any, Any, Any]:
    return (
        await _order_revenue(session, period),
        await _carts(session, period),
        await _unsubscribes(session, period),
    )


async def _sutra(session: AsyncSession, period: Period) -> tuple[Any, Any, Any]:
    return (
        await _attributed(session, period),
        await _suppressions(session, period),
        await _running(session),
    )


def _compose(
    period: Period,
    ordered: list[Any],
    credited: list[Any],
    sent: dict[tuple[date, str], tuple[int, ...]],
    unsent: list[Any],
    carts: dict[str, Any],
    unsubscribes: dict[str, int],
    suppressions: dict[str, int],
    running: int,
) -> dict[str, Any]:
    days: dict[date, dict[str, Any]] = {
        day: {
            "date": day,
            "messages": dict.fromkeys(CHANNELS, 0),
            "order_revenue": defaultdict(Decimal),
            "attributed_revenue": defaultdict(Decimal),
        }
        for day in period.days
    }
    totals_orders: dict[str, Decimal] = defaultdict(Decimal)
    totals_attributed: dict[str, Decimal] = defaultdict(Decimal)
    orders = 0
    for day, currency, count, revenue in ordered:
        days[day]["order_revenue"][currency] += revenue
        totals_orders[currency] += revenue
        orders += count
    attributed_orders = 0
    for day, currency, count, revenue in credited:
        days[day]["attributed_revenue"][currency] += revenue
        totals_attributed[currency] += revenue
        attributed_orders += count
    for (day, channel), figures in sent.items():
        days[day]["messages"][channel] = figures[0]
    return {
        "period": period.describe(),
        "revenue": {
            "orders": orders,
            "order_revenue": {c: _money(a) for c, a in sorted(totals_orders.items())},
            "attributed_orders": attributed_orders,
            "attributed_revenue": {c: _money(a) for c, a in sorted(totals_attributed.items())},
            "attributed_share": {
                c: float(totals_attributed[c] / a) if a else None
                for c, a in sorted(totals_orders.items())
            },
        },
        "carts": carts,
        "deliverability": _deliverability(sent, unsent),
        "unsubscribes": unsubscribes,
        "suppressions": suppressions,
        "journeys_running": running,
        "days": [
            {
                "date": d["date"].isoformat(),
                "messages": d["messages"],
                "order_revenue": {c: _money(a) for c, a in sorted(d["order_revenue"].items())},
                "attributed_revenue": {
                    c: _money(a) for c, a in sorted(d["attributed_revenue"].items())
                },
            }
            for d in days.values()
        ],
    }


async def _order_revenue(session: AsyncSession, period: Period) -> list[Any]:
    """Every order the shop reported placed in the period, once each (the first
    ``order.placed`` for an order id), at its reported total: the shop's own figure that
    Sutra's attributed share is set against."""
    data = Event.payload["data"]
    first = (
        select(
            Event.order_id,
            Event.occurred_at,
            data["currency"].astext.label("currency"),
            cast(data["total"].astext, Numeric(18, 4)).label("total"),
        )
        .where(Event.type == "order.placed", Event.order_id.is_not(None))
        .where(_within(Event.occurred_at, period))
        .ext(distinct_on(Event.order_id))
        .order_by(Event.order_id, Event.occurred_at)
        .subquery()
    )
    day = _day(first.c.occurred_at, period)
    result = await session.execute(
        select(day, first.c.currency, func.count(), func.sum(first.c.total)).group_by(
            day, first.c.currency
        )
    )
    return list(result.all())


def _not_a_test(workflow_id: Any) -> ColumnElement[bool]:
    """Not a rehearsal's: test runs of a rule have journey entries that say test.

    Spelled as NOT IN over those few workflow ids, which PostgreSQL hashes once per query
    (``test = true`` is the partial index's own predicate), rather than as a NOT EXISTS
    per row: under the OR it cannot become an anti-join, and a month of the ledger paid
    an index probe per message."""
    rehearsals = select(JourneyEntry.workflow_id).where(
        JourneyEntry.test == true(), JourneyEntry.workflow_id.is_not(None)
    )
    return or_(workflow_id.is_(None), workflow_id.not_in(rehearsals))


async def _attributed(session: AsyncSession, period: Period) -> list[Any]:
    day = _day(Attribution.ordered_at, period)
    # Each credited order's message by its key (a month's credits, a few thousand lookups),
    # not a join the planner answers by hashing the whole ledger.
    workflow_id = (
        select(Message.workflow_id).where(Message.id == Attribution.message_id).scalar_subquery()
    )
    result = await session.execute(
        select(day, Attribution.currency, func.count(), func.sum(Attribution.revenue))
        .where(_within(Attribution.ordered_at, period), _not_a_test(workflow_id))
        .group_by(day, Attribution.currency)
    )
    return list(result.all())


async def _sent(session: AsyncSession, period: Period) -> dict[tuple[date, str], tuple[int, ...]]:
    """Per day and channel, of the messages sent in the period: sent, delivered, bounced and
    spam complaints. One scan of the period's ledger serves both the per-day series and the
    deliverability figures."""
    day = _day(Message.sent_at, period)
    complained = Message.id.in_(
        select(MessageEvent.message_id).where(MessageEvent.status.in_(COMPLAINTS))
    )
    result = await session.execute(
        select(
            day,
            Message.channel,
            func.count(),
            func.count(Message.delivered_at),
            func.count().filter(Message.status == "bounced"),
            func.count().filter(complained),
        )
        .where(
            _within(Message.sent_at, period),
            Message.channel.in_(CHANNELS),
            _not_a_test(Message.workflow_id),
        )
        .group_by(day, Message.channel)
    )
    return {(d, str(channel)): tuple(counts) for d, channel, *counts in result.all()}


async def _carts(session: AsyncSession, period: Period) -> dict[str, Any]:
    """Cart journeys entered in the period, and those that ended in an order."""
    recovered = JourneyEntry.exit_reason.in_(RECOVERED)
    entered, won = (
        await session.execute(
            select(func.count(), func.count().filter(recovered)).where(
                JourneyEntry.cart_id.is_not(None),
                JourneyEntry.test.is_(False),
                _within(JourneyEntry.entered_at, period),
            )
        )
    ).one()
    revenue = await session.execute(
        select(Attribution.currency, func.sum(Attribution.revenue))
        .join(
            JourneyEntry,
            and_(
                JourneyEntry.cart_id == Attribution.cart_id,
                JourneyEntry.rule_id == Attribution.rule_id,
            ),
        )
        .where(
            Attribution.cart_id.is_not(None),
            JourneyEntry.test.is_(False),
            _within(JourneyEntry.entered_at, period),
        )
        .group_by(Attribution.currency)
    )
    return {
        "abandoned_journeys": entered,
        "recovered": won,
        "recovery_rate": won / entered if entered else None,
        "recovered_revenue": {c: _money(a) for c, a in sorted(revenue.all())},
    }


def _deliverability(
    sent: dict[tuple[date, str], tuple[int, ...]], unsent: list[Any]
) -> dict[str, Any]:
    """Per channel, of the messages sent in the period (``sent``, per day): delivered,
    bounced, spam complaints, and the bounce and complaint rates over those sent; and of
    the messages asked for in the period that never went (``unsent``): failed, and held
    back by send policy."""
    per_channel: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for (_, channel), counts in sent.items():
        per_channel[channel] = [a + b for a, b in zip(per_channel[channel], counts, strict=True)]
    out: dict[str, Any] = {channel: _no_sends() for channel in CHANNELS}
    for channel, (total, delivered, bounced, complaints) in per_channel.items():
        out[channel] |= {
            "sent": total,
            "delivered": delivered,
            "bounced": bounced,
            "complaints": complaints,
            "bounce_rate": bounced / total if total else None,
            "complaint_rate": complaints / total if total else None,
        }
    for unsent_channel, failed, suppressed in unsent:
        out[str(unsent_channel)] |= {"failed": failed, "suppressed": suppressed}
    return out


async def _unsent(session: AsyncSession, period: Period) -> list[Any]:
    """Per channel, of the messages asked for in the period: failed, and held back."""
    result = await session.execute(
        select(
            Message.channel,
            func.count().filter(Message.status == "failed"),
            func.count().filter(Message.status == "suppressed"),
        )
        .where(
            _within(Message.created_at, period),
            Message.channel.in_(CHANNELS),
            Message.status.in_(("failed", "suppressed")),
            _not_a_test(Message.workflow_id),
        )
        .group_by(Message.channel)
    )
    return list(result.all())


def _no_sends() -> dict[str, Any]:
    return {
        "sent": 0,
        "delivered": 0,
        "bounced": 0,
        "complaints": 0,
        "bounce_rate": None,
        "complaint_rate": None,
        "failed": 0,
        "suppressed": 0,
    }


async def _suppressions(session: AsyncSession, period: Period) -> dict[str, int]:
    """Addresses Sutra stopped messaging in the period, by reason (unsubscribe, stop,
    bounce, spamreport, …)."""
    result = await session.execute(
        select(Suppression.reason, func.count())
        .where(_within(Suppression.created_at, period))
        .group_by(Suppression.reason)
    )
    return {str(reason): int(count) for reason, count in sorted(result.all())}


async def _unsubscribes(session: AsyncSession, period: Period) -> dict[str, int]:
    """Customers who withdrew consent on a channel in the period, however they said it
    (an unsubscribe link, STOP, the provider's unsubscribe), counted once per customer and
    channel."""
    result = await session.execute(
        select(ConsentChange.channel, func.count(func.distinct(ConsentChange.customer_id)))
        .where(
            ConsentChange.granted.is_(False),
            or_(ConsentChange.previous.is_(None), ConsentChange.previous.is_(True)),
            _within(ConsentChange.occurred_at, period),
        )
        .group_by(ConsentChange.channel)
    )
    found = {str(channel): count for channel, count in result.all()}
    return {channel: found.get(channel, 0) for channel in CHANNELS}


async def _running(session: AsyncSession) -> int:
    """Journeys entered and not yet exited, now (not bound to the period)."""
    count = await session.scalar(
        select(func.count()).where(JourneyEntry.exited_at.is_(None), JourneyEntry.test == false())
    )
    return int(count or 0)
