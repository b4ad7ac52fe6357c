"""What each rule's credited orders came to once the orders played out: revenue at
placement beside revenue net of cancellations, returns to origin and refunds, and how the
COD orders it drove behaved (refused at the door, switched to prepaid, paid upfront).

A cart reminder that drives COD orders which are refused at the door looks like a win at
placement and is not one; this is the figure that says so. Orders come from the orders
read model (``orders``), kept by each order's workflow; an order credited to a rule but
with no row there yet (placed before the read model existed, or not yet written) is
counted as ``outcome_unknown`` and kept out of the net figures rather than guessed.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Attribution, Order, Rule
from services.analytics.period import Period

LOST = ("cancelled", "rto")


def _money(amount: Decimal | None) -> str:
    return str((amount or Decimal(0)).quantize(Decimal("0.01")))


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


async def net_revenue(session: AsyncSession, period: Period) -> dict[str, Any]:
    """Per rule (orders credited to it and placed in the period), per currency."""
    known = Order.order_id.is_not(None)
    lost = Order.status.in_(LOST)
    kept = and_(known, ~lost)
    net = case((kept, Order.total - Order.refunded_amount), else_=Decimal(0))
    cod = Order.placed_payment_type == "cod"
    partial = Order.placed_payment_type == "partial_cod"
    result = await session.execute(
        select(
            Attribution.rule_id,
            Attribution.currency,
            func.count(),
            func.sum(Attribution.revenue),
            func.count(Order.order_id),
            func.sum(case((known, net))),
            func.sum(case((known, Order.refunded_amount))),
            func.count().filter(Order.status == "cancelled"),
            func.count().filter(Order.status == "rto"),
            func.count().filter(Order.status == "delivered"),
            func.count().filter(cod),
            func.count().filter(cod, Order.converted_to_prepaid.is_(True)),
            func.count().filter(partial),
            func.count().filter(partial, Order.paid_at.is_not(None)),
        )
        .outerjoin(Order, Order.order_id == Attribution.order_id)
        .where(
            Attribution.rule_id.is_not(None),
            Attribution.ordered_at >= period.start_utc,
            Attribution.ordered_at < period.end_utc,
        )
        .group_by(Attribution.rule_id, Attribution.currency)
    )
    rows: dict[str, dict[str, Any]] = defaultdict(lambda: {"currencies": {}})
    for (
        rule_id,
        currency,
        orders,
        placed,
        with_outcome,
        net_total,
        refunded,
        cancelled,
        rto,
        delivered,
        cod_orders,
        switched,
        partial_orders,
        collected,
    ) in result.all():
        rows[rule_id]["currencies"][currency] = {
            "orders": orders,
            "outcome_unknown": orders - with_outcome,
            "placed_revenue": _money(placed),
            "net_revenue": _money(net_total),
            "refunded": _money(refunded),
            "cancelled": cancelled,
            "rto": rto,
            "delivered": delivered,
            "rto_rate": _rate(rto, rto + delivered),
            "cod_orders": cod_orders,
            "cod_to_prepaid_rate": _rate(switched, cod_orders),
            "partial_cod_orders": partial_orders,
            "partial_cod_collection_rate": _rate(collected, partial_orders),
        }
    names = dict(
        (await session.execute(select(Rule.id, Rule.name).where(Rule.id.in_(list(rows))))).all()
    )
    return {
        "period": period.describe(),
        "rules": [
            {"rule_id": rule_id, "name": names.get(rule_id), **rows[rule_id]}
            for rule_id in sorted(rows)
        ],
    }
