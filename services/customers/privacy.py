"""A customer's data on request: everything Sutra keeps about them (export), and its
erasure (the right to be forgotten).

**Erasure keeps a tombstone.** The ``customers`` row stays, with every personal field
(email, phone, name, birthday, shop attributes) set to NULL, consent withdrawn on every
channel and ``fields_as_of`` stamped with the moment of erasure for every field (and
``erased_at``). Deleting the row instead would let a late event — one that happened
before the erasure but reaches Sutra after it, from a shop's retrying outbox — recreate
the profile with the erased data; with the stamps, the newest-``occurred_at``-wins upsert
ignores such an event. An event that happened *after* the erasure is the shop telling us
of the customer again (they came back) and updates the profile as usual. The row also
keeps ``customer_id`` joins working for the analytics that survive.

**What survives, anonymised**: messages (channel, template, status, timestamps, rule,
version, step, coupon and revenue links — but no address, subject, body, HTML, provider
details), attributions (revenue, currency, discount, rule, variant, channel, coupon code:
a random code, personal only through the customer id it is bound to), journey entries,
claims and split assignments (variant results), coupons (percent, status; active ones are
revoked), product purchases (co-purchase counts; no replenishment reminder is due any
more), customer stats (order counts and spend; no city), consent history (what was
granted when, the record of lawful basis) plus a withdrawal per channel. The shop's own
customer id stays: it is the shop's pseudonym, and erasing twice must find the tombstone.

**What goes**: event payloads' ``customer`` blocks become ``{"id": <id>}``, shipping keeps
only the country, and any other string in the payload holding the email, phone or name is
removed (also in the outbox rows towards Temporal that were already delivered); provider
reports about their messages lose their payloads; inbound replies lose their body and
sender; product interests and back-in-stock subscriptions are deleted.

**Suppression**: their email and phone are kept only as keyed hashes
(``hmac-sha256:<hex>``, keyed with ``SUTRA_SECRET_KEY``): existing suppressions are
rewritten to the hash, and a ``marketing`` suppression with reason ``erased`` is added per
channel, so the fact that this address asked to be forgotten survives without the address.
(``services/suppressions.blocking`` compares plain addresses today; to make a re-import
unable to re-subscribe the address without new consent it must also look up
``hashed_address(channel, address)`` — see the report of issue 7.)

**Journeys**: after the transaction commits, every running ``CartWorkflow`` and
``LifecycleJourney`` with ``CustomerId = <id>`` is terminated with reason "customer
erased". Order workflows are not touched: fulfilment of a placed order goes on. Temporal's
own histories of closed workflows keep what their inputs carried until the namespace's
retention period ends them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, false, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from contracts import search_attributes as sa
from contracts.names import CART_WORKFLOW, LIFECYCLE_WORKFLOW
from db.models import (
    Attribution,
    BackInStockSubscription,
    ConsentChange,
    Coupon,
    Customer,
    CustomerStats,
    Event,
    InboundMessage,
    JourneyClaim,
    JourneyEntry,
    JourneyOrder,
    Message,
    PaymentLink,
    ProductInterest,
    ProductPurchase,
    Refund,
    SplitAssignment,
    Suppression,
)
from services.customers.privacy_tables import (
    ERASED_REASON,
    Delete,
    Found,
    Keep,
    Overwrite,
    Scope,
    Table,
    erase_events,
    erase_messages,
    erase_profile,
    erase_suppressions,
    events_of,
    export_computed,
    export_messages,
    hashed_address,
    row,
    rowcount,
    scope_of,
)

__all__ = ["Erasure", "end_journeys", "erase", "export", "hashed_address", "summary"]

log = logging.getLogger("sutra.privacy")

# The workflows that are journeys about the customer; orders are fulfilment and go on.
JOURNEY_WORKFLOWS = (CART_WORKFLOW, LIFECYCLE_WORKFLOW)


def _of_customer(column: Any) -> Found:
    return lambda scope: column == scope.customer_id


def _of_orders(column: Any) -> Found:
    return lambda scope: column.in_(scope.orders) if scope.orders else false()


def _inbound(scope: Scope) -> ColumnElement[bool]:
    filters = [InboundMessage.customer_id == scope.customer_id]
    if scope.phone:
        filters.append(InboundMessage.from_address.in_(_phone_forms(scope.phone)))
    return or_(*filters)


def _suppressions(scope: Scope) -> ColumnElement[bool]:
    filters = [Suppression.customer_id == scope.customer_id]
    for channel, address in scope.addresses.items():
        filters.append((Suppression.channel == channel) & (Suppression.address == address))
    return or_(*filters)


def _phone_forms(phone: str) -> list[str]:
    return [phone, f"whatsapp:{phone}"]


def _erased_from(scope: Scope) -> dict[str, Any]:
    phone = scope.phone
    return {
        "body": "",
        "keyword": None,
        "from_address": (hashed_address(scope.secret, "sms", phone)[:64] if phone else "erased"),
    }


# Every table holding a customer's data, in the export's order, which erasure follows too:
# the profile becomes a tombstone first, the others are found by what Scope read before.
TABLES: list[Table] = [
    Table("profile", Customer, _of_customer(Customer.id), (), erase_profile, one=True),
    Table(
        "consent_history",
        ConsentChange,
        _of_customer(ConsentChange.customer_id),
        (ConsentChange.occurred_at, ConsentChange.id),
        Keep(),  # the record of lawful basis; the tombstone adds a withdrawal per channel
    ),
    # What segments and conditions read about them, computed from the tables.
    Table("computed", Customer, _of_customer(Customer.id), (), Keep(), export=export_computed),
    Table(
        "stats",
        CustomerStats,
        _of_customer(CustomerStats.customer_id),
        (),
        Overwrite(lambda _: {"city": None}),
        one=True,
    ),
    Table("events", Event, events_of, (Event.occurred_at, Event.id), erase_events),
    Table(
        "messages",
        Message,
        _of_customer(Message.customer_id),
        (),
        erase_messages,
        export=export_messages,
    ),
    Table(
        "inbound_messages",
        InboundMessage,
        _inbound,
        (InboundMessage.id,),
        Overwrite(_erased_from, count="inbound_messages"),
    ),
    Table(
        "coupons",
        Coupon,
        _of_customer(Coupon.customer_id),
        (Coupon.created_at,),
        # Bound to them, kept for analytics; one they could still use is revoked.
        Overwrite(
            lambda scope: {
                "status": "revoked",
                "revoked_at": scope.at,
                "revoke_reason": ERASED_REASON,
            },
            only=lambda _: Coupon.status == "active",
            count="coupons_revoked",
        ),
    ),
    Table(
        "journey_entries",
        JourneyEntry,
        _of_customer(JourneyEntry.customer_id),
        (JourneyEntry.entered_at, JourneyEntry.id),
        # Journeys that will not end by themselves (their workflows are terminated after).
        Overwrite(
            lambda scope: {"exited_at": scope.at, "exit_reason": "erased"},
            only=lambda _: JourneyEntry.exited_at.is_(None),
            count="journey_entries_ended",
        ),
    ),
    Table(
        "journey_claims",
        JourneyClaim,
        _of_customer(JourneyClaim.customer_id),
        (JourneyClaim.claimed_at,),
        Keep(),
    ),
    Table(
        "split_assignments",
        SplitAssignment,
        _of_customer(SplitAssignment.customer_id),
        (SplitAssignment.assigned_at,),
        Keep(),  # variant results
    ),
    Table(
        "attributions",
        Attribution,
        _of_customer(Attribution.customer_id),
        (Attribution.ordered_at,),
        Keep(),  # revenue; its coupon code is random
    ),
    Table(
        "journey_orders",
        JourneyOrder,
        _of_customer(JourneyOrder.customer_id),
        (JourneyOrder.ordered_at, JourneyOrder.order_id),
        Keep(),  # holdout lift
    ),
    Table(
        "purchases",
        ProductPurchase,
        _of_customer(ProductPurchase.customer_id),
        (ProductPurchase.purchased_at, ProductPurchase.sku),
        # Co-purchase counts stay; no replenishment reminder is due any more.
        Overwrite(lambda _: {"replenish_due_at": None}),
    ),
    Table(
        "product_interests",
        ProductInterest,
        _of_customer(ProductInterest.customer_id),
        (ProductInterest.last_at,),
        Delete(count="product_interests"),
    ),
    Table(
        "back_in_stock_subscriptions",
        BackInStockSubscription,
        _of_customer(BackInStockSubscription.customer_id),
        (BackInStockSubscription.subscribed_at,),
        Delete(count="back_in_stock_subscriptions"),
    ),
    Table(
        "payment_links",
        PaymentLink,
        _of_orders(PaymentLink.order_id),
        (PaymentLink.created_at,),
        Keep(),
    ),
    Table("refunds", Refund, _of_orders(Refund.order_id), (Refund.created_at,), Keep()),
    Table(
        "suppressions",
        Suppression,
        _suppressions,
        (Suppression.id,),
        erase_suppressions,
    ),
]


async def export(session: AsyncSession, customer_id: str) -> dict[str, Any] | None:
    """Everything Sutra stores about the customer, as JSON-ready data; None if unknown."""
    customer = await session.get(Customer, customer_id)
    if customer is None:
        return None
    them = await scope_of(session, customer, datetime.now(UTC))
    data: dict[str, Any] = {
        "customer_id": customer_id,
        "exported_at": them.at.isoformat(),
        "erased_at": (customer.fields_as_of or {}).get("erased_at"),
    }
    for table in TABLES:
        data[table.key] = await _export(session, them, table)
    return data


async def _export(session: AsyncSession, them: Scope, table: Table) -> Any:
    if table.export is not None:
        return await table.export(session, them)
    query = select(table.model).where(table.found(them))
    if table.one:
        found = await session.scalar(query)
        return row(found) if found is not None else None
    return [row(r) for r in await session.scalars(query.order_by(*table.order_by))]


@dataclass
class Erasure:
    customer_id: str
    erased_at: datetime
    counts: dict[str, int] = field(default_factory=dict)
    journeys_terminated: list[str] = field(default_factory=list)


async def erase(
    session: AsyncSession, customer_id: str, *, secret: str, now: datetime | None = None
) -> Erasure | None:
    """Remove or overwrite the customer's personal data in the session's transaction;
    None if there is no such customer. The caller commits, then ends their journeys."""
    customer = await session.get(Customer, customer_id, with_for_update=True)
    if customer is None:
        return None
    them = await scope_of(session, customer, now or datetime.now(UTC), secret)
    for table in TABLES:
        await _erase(session, them, table)
    return Erasure(customer_id=customer_id, erased_at=them.at, counts=them.counts)


async def _erase(session: AsyncSession, them: Scope, table: Table) -> None:
    action = table.erase
    if isinstance(action, Keep):
        return
    if isinstance(action, Delete):
        done = await rowcount(session, delete(table.model).where(table.found(them)))
    elif isinstance(action, Overwrite):
        where = [table.found(them)] + ([action.only(them)] if action.only else [])
        statement = update(table.model).where(*where).values(action.values(them))
        done = await rowcount(session, statement)
    else:
        await action(session, them)
        return
    if action.count is not None:
        them.counts[action.count] = done


async def end_journeys(temporal: Client, customer_id: str) -> list[str]:
    """Terminate the customer's running cart and lifecycle journeys; their ids."""
    types = " OR ".join(f'WorkflowType = "{t}"' for t in JOURNEY_WORKFLOWS)
    query = (
        f'{sa.equals(sa.CUSTOMER_ID, customer_id)} AND ExecutionStatus = "Running" AND ({types})'
    )
    ended: list[str] = []
    async for execution in temporal.list_workflows(query):
        handle = temporal.get_workflow_handle(execution.id, run_id=execution.run_id)
        try:
            await handle.terminate(reason=ERASED_REASON)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:  # it ended meanwhile: fine
                raise
            continue
        ended.append(execution.id)
    return ended


def summary(erasure: Erasure) -> dict[str, Any]:
    return {
        "customer_id": erasure.customer_id,
        "erased_at": erasure.erased_at.isoformat(),
        "counts": dict(erasure.counts),
        "journeys_terminated": list(erasure.journeys_terminated),
    }
