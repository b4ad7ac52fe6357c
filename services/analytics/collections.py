"""What the payment links collected over a period: per purpose (upfront share of a partial
COD order, full prepayment, an offer to switch COD to prepaid), how many links were created,
how many were paid, how long payment took (median and p90), the money collected per
currency; and the refunds made.

Read from the payment ledger (``payment_links``, ``refunds``), by the day a link was
created in the shop's time zone.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import PaymentLink, Refund
from services.analytics.period import Period

PURPOSES = ("upfront", "prepaid", "offer")


async def payment_collections(session: AsyncSession, period: Period) -> dict[str, Any]:
    created = (PaymentLink.created_at >= period.start_utc) & (
        PaymentLink.created_at < period.end_utc
    )
    waited = func.extract("epoch", PaymentLink.paid_at - PaymentLink.created_at)
    rows = await session.execute(
        select(
            PaymentLink.purpose,
            func.count(),
            func.count(PaymentLink.paid_at),
            func.percentile_cont(0.5).within_group(waited),
            func.percentile_cont(0.9).within_group(waited),
        )
        .where(created)
        .group_by(PaymentLink.purpose)
    )
    purposes: dict[str, dict[str, Any]] = {}
    for purpose, links, paid, median, p90 in rows.all():
        purposes[purpose] = {
            "purpose": purpose,
            "links": links,
            "paid": paid,
            "paid_rate": paid / links if links else None,
            "median_seconds_to_pay": float(median) if median is not None else None,
            "p90_seconds_to_pay": float(p90) if p90 is not None else None,
            "collected": {},
        }
    money = await session.execute(
        select(PaymentLink.purpose, PaymentLink.currency, func.sum(PaymentLink.amount))
        .where(created, PaymentLink.paid_at.is_not(None))
        .group_by(PaymentLink.purpose, PaymentLink.currency)
    )
    for purpose, currency, amount in money.all():
        purposes[purpose]["collected"][currency] = amount
    day = cast(func.timezone(period.zone.key, PaymentLink.created_at), Date)
    daily = await session.execute(
        select(day, func.count(), func.count(PaymentLink.paid_at)).where(created).group_by(day)
    )
    per_day = {when.isoformat(): (links, paid) for when, links, paid in daily.all()}
    refunds = await session.execute(
        select(Refund.currency, func.count(), func.sum(Refund.amount))
        .where(
            Refund.status == "done",
            Refund.created_at >= period.start_utc,
            Refund.created_at < period.end_utc,
        )
        .group_by(Refund.currency)
    )
    refunded: dict[str, Decimal] = defaultdict(Decimal)
    refund_count = 0
    for currency, count, amount in refunds.all():
        refunded[currency] += amount
        refund_count += count
    order = [p for p in PURPOSES if p in purposes] + sorted(set(purposes) - set(PURPOSES))
    return {
        "period": period.describe(),
        "purposes": [purposes[p] for p in order],
        "by_day": {
            "links": [per_day.get(d.isoformat(), (0, 0))[0] for d in period.days],
            "paid": [per_day.get(d.isoformat(), (0, 0))[1] for d in period.days],
        },
        "refunds": {"count": refund_count, "amount": dict(refunded)},
    }
