"""The orders journeys see as their goal, held-out journeys and treated ones alike: what
holdout lift compares (services/analytics/lift.py).

A journey asks credit for an order when its goal is reached (the cart's order, the
customer's order a lifecycle journey ends on or waits for after its last step); the same
ask records the order here against the journey's entry, ``converted`` when it came within
the rule's ``attribution_window`` after entry. A held-out journey has no message to credit,
so this row is the only trace of its conversion; the order's credit (``attributions``,
one message across all rules) is decided apart from it.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.rules import RuleDefinition
from db.models import JourneyEntry, JourneyOrder
from services.journeys.attribution import placed
from services.journeys.rules import version_of


async def record(
    session: AsyncSession,
    *,
    workflow_id: str,
    run_id: str | None,
    order_id: str,
    cart_id: str | None,
) -> JourneyOrder | None:
    """Record (once) that the journey of this workflow run reached its goal with this
    order; None for a test run, an unknown journey or an order never placed."""
    entry = await session.scalar(
        select(JourneyEntry)
        .where(
            JourneyEntry.workflow_id == workflow_id,
            or_(JourneyEntry.run_id.is_(None), JourneyEntry.run_id == run_id),
        )
        .order_by(JourneyEntry.entered_at.desc())
        .limit(1)
    )
    if entry is None or entry.test:
        return None
    order = await placed(session, order_id)
    if order is None:
        return None
    version = await version_of(session, entry.rule_id, entry.rule_version)
    window = RuleDefinition.model_validate(version.definition).attribution_window
    data = order.payload.get("data", {})
    await session.execute(
        insert(JourneyOrder)
        .values(
            entry_id=entry.id,
            order_id=order_id,
            customer_id=entry.customer_id,
            cart_id=cart_id,
            revenue=Decimal(str(data.get("total", "0"))),
            currency=str(data.get("currency")),
            ordered_at=order.occurred_at,
            converted=order.occurred_at <= entry.entered_at + window,
        )
        .on_conflict_do_nothing()
    )
    return await session.get(JourneyOrder, (entry.id, order_id))
