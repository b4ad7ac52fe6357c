"""Activities of the cart workflow."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from contracts.carts import PREPARE_CART, PrepareCartInput, PrepareCartResult
from db.models import Event
from services.journeys import admission


class CartActivities:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    @activity.defn(name=PREPARE_CART)
    async def prepare_cart(self, input: PrepareCartInput) -> PrepareCartResult:
        """What a new cart run needs to know: whether the cart already became an order
        (at or after ``placed_since``), and when the rules call a cart abandoned."""
        async with self._sessionmaker() as session:
            after = await admission.abandon_after(session, input.test_rule)
            row = (
                await session.execute(
                    select(Event.order_id, Event.occurred_at)
                    .where(
                        Event.cart_id == input.cart_id,
                        Event.type == "order.placed",
                        Event.occurred_at >= input.placed_since,
                    )
                    .order_by(Event.occurred_at)
                    .limit(1)
                )
            ).one_or_none()
        if row is None:
            return PrepareCartResult(abandon_after=after)
        return PrepareCartResult(
            order_id=row.order_id, occurred_at=row.occurred_at, abandon_after=after
        )
