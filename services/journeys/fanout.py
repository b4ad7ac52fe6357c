"""The audience of a product event, one page at a time: who hears that a product is back in
stock (its waiting subscribers) or cheaper (customers who viewed or carted it).

Each page becomes one journey per customer per active rule with the trigger, started
through ``journey_starts.claim_and_start`` under the occurrence ``bis-{event_id}`` or
``price-{event_id}``: a page run twice (an activity retry) starts nothing twice.

Back in stock notifies each subscription once. A page of subscriptions is *taken* for the
event before its journeys start: one UPDATE marks them notified by this event, with their
rows locked, so a second ``product.back_in_stock`` for the same product (the product
flapped out of and into stock) running at the same time can never take them too. The
taken rows stay in this event's audience (``notified_event_id`` is this event), so a retry
after a crash between the mark and the starts finds and starts them.

Owns its transactions: a page is taken and committed before its journeys are claimed and
started (``claim_and_start`` commits those in steps of its own), so no other event can take
the page's subscribers once their journeys may have started, and no row lock is held while
Temporal is called. It takes the sessionmaker, not a session; its one commit is the named
step ``_take_page``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from contracts.fanout import FanoutInput
from contracts.lifecycle import JourneyStart
from db.models import BackInStockSubscription, ProductInterest, Rule
from services.journeys.starts import claim_and_start

BACK_IN_STOCK = "product.back_in_stock"


@dataclass(frozen=True)
class Page:
    # The last customer of the page: where the next page starts. None: the scan is over.
    cursor: str | None
    customers: int  # audience members in this page
    journeys: int  # journeys asked for (customers x rules), what the rate is about


def occurrence(input: FanoutInput) -> str:
    prefix = "bis" if input.trigger == BACK_IN_STOCK else "price"
    return f"{prefix}-{input.event_id}"


async def active_rules(session: AsyncSession, trigger: str) -> list[str]:
    """Rules a journey could enter now; the journey itself checks again on entry."""
    return list(
        await session.scalars(
            select(Rule.id)
            .where(Rule.trigger_event == trigger, Rule.status == "active")
            .order_by(Rule.priority, Rule.created_at, Rule.id)
        )
    )


async def _take_subscribers(
    session: AsyncSession, input: FanoutInput, limit: int, now: datetime
) -> list[str]:
    subs = BackInStockSubscription
    # Waiting, or already taken by this very event (a retried page).
    takeable = (
        subs.sku == input.sku,
        # Subscribing after the product came back is a wish for the next time.
        subs.subscribed_at <= input.occurred_at,
        or_(subs.notified_at.is_(None), subs.notified_event_id == input.event_id),
    )
    page = (
        select(subs.customer_id)
        .where(*takeable)
        .order_by(subs.customer_id)
        .limit(limit)
        # Locked and re-checked: rows another event took meanwhile drop out of the page.
        .with_for_update()
    )
    if input.cursor is not None:
        page = page.where(subs.customer_id > input.cursor)
    customers = list(await session.scalars(page))
    # A page may come back short, or empty, when another event took rows while this one
    # waited for their locks; empty then is not the end unless nothing is left to take.
    while not customers and await session.scalar(page.with_for_update(skip_locked=True)):
        customers = list(await session.scalars(page))
    if customers:
        await session.execute(
            update(subs)
            .where(subs.sku == input.sku, subs.customer_id.in_(customers))
            .values(notified_event_id=input.event_id, notified_at=now)
        )
    return customers  # in the database's order: the last one is the cursor


async def _interested(session: AsyncSession, input: FanoutInput, limit: int) -> list[str]:
    query = (
        select(ProductInterest.customer_id)
        .where(ProductInterest.sku == input.sku, ProductInterest.kind.in_(("viewed", "carted")))
        .order_by(ProductInterest.customer_id)
        .limit(limit)
    )
    if input.cursor is not None:
        query = query.where(ProductInterest.customer_id > input.cursor)
    return list(await session.scalars(query))


async def run_page(
    client: Client,
    sessionmaker: async_sessionmaker[AsyncSession],
    task_queue: str,
    input: FanoutInput,
    *,
    limit: int,
    now: datetime,
) -> Page:
    """Start the journeys of the page after ``input.cursor``."""
    rules, customers = await _take_page(sessionmaker, input, limit, now)
    if not customers:
        return Page(cursor=None, customers=0, journeys=0)
    starts = [
        JourneyStart(
            rule_id=rule_id,
            customer_id=customer_id,
            occurrence=occurrence(input),
            trigger=input.trigger,
            triggered_at=input.occurred_at,
            context=input.context,
        )
        for customer_id in customers
        for rule_id in rules
    ]
    await claim_and_start(client, sessionmaker, task_queue, starts)
    return Page(cursor=customers[-1], customers=len(customers), journeys=len(starts))


async def _take_page(
    sessionmaker: async_sessionmaker[AsyncSession], input: FanoutInput, limit: int, now: datetime
) -> tuple[list[str], list[str]]:
    """The active rules and the page's customers (subscribers taken for this event),
    committed."""
    async with sessionmaker() as session, session.begin():
        rules = await active_rules(session, input.trigger)
        if not rules:
            # Nobody would be told: leave the subscriptions waiting for a rule.
            return [], []
        if input.trigger == BACK_IN_STOCK:
            return rules, await _take_subscribers(session, input, limit, now)
        return rules, await _interested(session, input, limit)
