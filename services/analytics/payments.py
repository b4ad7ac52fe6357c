"""Payments analytics (``GET /v1/analytics/payments``): how each payment type fares, how
partial COD gets paid, how COD confirmations and the prepay offer go, and where parcels
come back. Read from the orders read model (``db.models.Order``, kept by the order
workflow), over the orders *placed* in the period; every figure is one aggregate query.

Definitions (the README says the same):

- An order counts under the payment type the customer chose at checkout
  (``placed_payment_type``): a COD order that took the prepay offer stays COD here and is
  counted in ``cod.converted_to_prepaid``.
- RTO rate = RTO / (delivered + RTO): of the parcels that reached an end at the door, the
  share that came back; null while none has. A delivered parcel that came back is an RTO.
- Revenue is the orders' totals as placed; net revenue leaves out cancelled and returned
  orders and takes off the prepay-offer discounts and the refunds of the rest.
- Partial COD upfront-paid rate = orders whose upfront was paid online / orders that were
  asked for one (a positive upfront amount); time to pay runs from placement to that
  payment; reminders to pay counts the paid orders by the reminders sent before they paid.
- Places: orders are grouped by the shipping ``city`` / ``postal_code`` exactly as the shop
  sent them; only places with at least ``min_orders`` delivered-or-RTO orders and one RTO
  are ranked, worst RTO rate first (more RTOs, then the name, break ties); ten at most.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Float, and_, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from contracts.payment_policy import quantize
from db.models import Order
from services.analytics.period import Period
from services.analytics.snapshot import side_by_side

PAYMENT_TYPES = ("cod", "partial_cod", "prepaid")
# A place needs this many delivered-or-RTO orders in the period before its RTO rate ranks
# it (``min_orders``): two parcels out of three is no pattern yet.
MIN_PLACE_ORDERS = 20
WORST_PLACES = 10

_ENDED_AT_DOOR = ("delivered", "rto")
_LOST = ("cancelled", "rto")


def _in(period: Period) -> ColumnElement[bool]:
    return and_(Order.placed_at >= period.start_utc, Order.placed_at < period.end_utc)


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _money(amounts: dict[str, Decimal]) -> dict[str, str]:
    return {c: str(quantize(a, c)) for c, a in sorted(amounts.items())}


async def payments(session: AsyncSession, period: Period, *, min_orders: int) -> dict[str, Any]:
    """The figures, read by three groups of queries side by side on one snapshot."""

    async def types_and_cod(s: AsyncSession) -> tuple[Any, Any]:
        return await _by_type(s, period), await _cod(s, period)

    async def partial_and_cities(s: AsyncSession) -> tuple[Any, Any]:
        return await _partial_cod(s, period), await _worst(s, period, Order.city, min_orders)

    (by_type, cod), (partial_cod, cities), postal_codes = await side_by_side(
        session,
        types_and_cod,
        partial_and_cities,
        lambda s: _worst(s, period, Order.postal_code, min_orders),
    )
    return {
        "period": period.describe(),
        "min_orders": min_orders,
        "payment_types": by_type,
        "partial_cod": partial_cod,
        "cod": cod,
        "rto_by_city": cities,
        "rto_by_postal_code": postal_codes,
    }


async def _by_type(session: AsyncSession, period: Period) -> list[dict[str, Any]]:
    count = func.count()
    result = await session.execute(
        select(
            Order.placed_payment_type,
            Order.currency,
            count,
            count.filter(Order.status == "cancelled"),
            count.filter(Order.status == "delivered"),
            count.filter(Order.status == "rto"),
            func.sum(Order.total),
            func.coalesce(
                func.sum(Order.total - Order.discount - Order.refunded_amount).filter(
                    Order.status.not_in(_LOST)
                ),
                0,
            ),
        )
        .where(_in(period))
        .group_by(Order.placed_payment_type, Order.currency)
    )
    rows: dict[str, dict[str, Any]] = {
        t: {
            "orders": 0,
            "cancelled": 0,
            "delivered": 0,
            "rto": 0,
            "revenue": defaultdict(Decimal),
            "net_revenue": defaultdict(Decimal),
        }
        for t in PAYMENT_TYPES
    }
    for kind, currency, orders, cancelled, delivered, rto, revenue, net in result.all():
        row = rows[kind]
        row["orders"] += orders
        row["cancelled"] += cancelled
        row["delivered"] += delivered
        row["rto"] += rto
        row["revenue"][currency] += revenue
        row["net_revenue"][currency] += net
    return [
        {
            "payment_type": kind,
            "orders": row["orders"],
            "cancelled": row["cancelled"],
            "cancellation_rate": _rate(row["cancelled"], row["orders"]),
            "delivered": row["delivered"],
            "rto": row["rto"],
            "rto_rate": _rate(row["rto"], row["delivered"] + row["rto"]),
            "revenue": _money(row["revenue"]),
            "net_revenue": _money(row["net_revenue"]),
        }
        for kind, row in rows.items()
    ]


async def _partial_cod(session: AsyncSession, period: Period) -> dict[str, Any]:
    asked = Order.upfront_amount > 0
    paid = and_(asked, Order.paid_at.is_not(None))
    seconds = func.extract("epoch", Order.paid_at - Order.placed_at)
    count = func.count()
    where = and_(_in(period), Order.placed_payment_type == "partial_cod")
    orders, asked_n, paid_n, median, p90 = (
        await session.execute(
            select(
                count,
                count.filter(asked),
                count.filter(paid),
                func.percentile_cont(0.5).within_group(seconds).filter(paid),
                func.percentile_cont(0.9).within_group(seconds).filter(paid),
            ).where(where)
        )
    ).one()
    by_reminders = dict(
        (
            await session.execute(
                select(Order.reminders_sent, count)
                .where(where, paid)
                .group_by(Order.reminders_sent)
            )
        ).all()
    )
    most = max(by_reminders, default=-1)
    return {
        "orders": orders,
        "upfront_asked": asked_n,
        "upfront_paid": paid_n,
        "upfront_paid_rate": _rate(paid_n, asked_n),
        "median_seconds_to_pay": median,
        "p90_seconds_to_pay": p90,
        "reminders_to_pay": {str(n): by_reminders.get(n, 0) for n in range(most + 1)},
    }


async def _cod(session: AsyncSession, period: Period) -> dict[str, Any]:
    count = func.count()
    answer = Order.cod_confirmation_answer
    orders, asked, yes, no, converted = (
        await session.execute(
            select(
                count,
                count.filter(Order.cod_confirmation_asked),
                count.filter(answer == "yes"),
                count.filter(answer == "no"),
                count.filter(Order.converted_to_prepaid),
            ).where(_in(period), Order.placed_payment_type == "cod")
        )
    ).one()
    return {
        "orders": orders,
        "confirmations_asked": asked,
        "confirmations_answered": yes + no,
        "answered_yes": yes,
        "answered_no": no,
        "confirmation_answer_rate": _rate(yes + no, asked),
        "converted_to_prepaid": converted,
        "conversion_rate": _rate(converted, orders),
    }


async def _worst(
    session: AsyncSession,
    period: Period,
    place: InstrumentedAttribute[str | None],
    min_orders: int,
) -> list[dict[str, Any]]:
    ended = func.count().filter(Order.status.in_(_ENDED_AT_DOOR))
    rto = func.count().filter(Order.status == "rto")
    rate = cast(rto, Float) / ended
    result = await session.execute(
        select(place, ended, rto)
        .where(_in(period), place.is_not(None))
        .group_by(place)
        .having(and_(ended >= min_orders, rto > 0))
        .order_by(rate.desc(), rto.desc(), place)
        .limit(WORST_PLACES)
    )
    return [
        {"place": name, "delivered_or_rto": n, "rto": r, "rto_rate": r / n}
        for name, n, r in result.all()
    ]
