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

import hashlib
import hmac
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, false, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from contracts import search_attributes as sa
from contracts.lifecycle import LIFECYCLE_WORKFLOW
from db.models import (
    Attribution,
    BackInStockSubscription,
    Base,
    ConsentChange,
    Coupon,
    Customer,
    CustomerStats,
    Event,
    EventRoute,
    InboundMessage,
    JourneyClaim,
    JourneyEntry,
    Message,
    MessageEvent,
    PaymentLink,
    ProductInterest,
    ProductPurchase,
    Refund,
    SplitAssignment,
    Suppression,
)
from services.customers.profiles import PROFILE_FIELDS, customer_context
from services.intake.routing import CART_WORKFLOW

log = logging.getLogger("sutra.privacy")

CHANNELS = ("email", "sms", "whatsapp")
ERASED_REASON = "customer erased"
# The workflows that are journeys about the customer; orders are fulfilment and go on.
JOURNEY_WORKFLOWS = (CART_WORKFLOW, LIFECYCLE_WORKFLOW)


def _row(obj: Base) -> dict[str, Any]:
    return {attr.key: _plain(getattr(obj, attr.key)) for attr in obj.__mapper__.column_attrs}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def hashed_address(secret: str, channel: str, address: str) -> str:
    """The keyed hash an erased address is remembered by (emails compare lower-case,
    phones without a ``whatsapp:`` prefix, as suppressions do)."""
    normal = address.strip().lower() if channel == "email" else address.strip()
    normal = normal.removeprefix("whatsapp:")
    digest = hmac.new(secret.encode(), f"{channel}:{normal}".encode(), hashlib.sha256)
    return "hmac-sha256:" + digest.hexdigest()


def _addresses(customer: Customer) -> dict[str, str]:
    """Their suppression addresses per channel."""
    out: dict[str, str] = {}
    if customer.email:
        out["email"] = customer.email.strip().lower()
    if customer.phone:
        out["sms"] = customer.phone.strip()
        out["whatsapp"] = customer.phone.strip()
    return out


async def _order_ids(session: AsyncSession, customer_id: str) -> list[str]:
    ids: set[str] = set()
    ids.update(
        await session.scalars(
            select(Event.order_id).where(
                Event.customer_id == customer_id, Event.order_id.is_not(None)
            )
        )
    )
    ids.update(
        await session.scalars(
            select(ProductPurchase.order_id).where(ProductPurchase.customer_id == customer_id)
        )
    )
    ids.update(
        await session.scalars(
            select(Attribution.order_id).where(Attribution.customer_id == customer_id)
        )
    )
    return sorted(i for i in ids if i)


def _phone_forms(phone: str | None) -> list[str]:
    return [phone, f"whatsapp:{phone}"] if phone else []


# Export.


async def export(session: AsyncSession, customer_id: str) -> dict[str, Any] | None:
    """Everything Sutra stores about the customer, as JSON-ready data; None if unknown."""
    customer = await session.get(Customer, customer_id)
    if customer is None:
        return None
    orders = await _order_ids(session, customer_id)
    addresses = _addresses(customer)

    async def rows(query: Any) -> list[dict[str, Any]]:
        return [_row(r) for r in await session.scalars(query)]

    messages = list(
        await session.scalars(
            select(Message)
            .where(Message.customer_id == customer_id)
            .order_by(Message.created_at, Message.id)
        )
    )
    events_by_message: dict[uuid.UUID, list[dict[str, Any]]] = {}
    if messages:
        for report in await session.scalars(
            select(MessageEvent)
            .where(MessageEvent.message_id.in_([m.id for m in messages]))
            .order_by(MessageEvent.occurred_at, MessageEvent.id)
        ):
            assert report.message_id is not None
            events_by_message.setdefault(report.message_id, []).append(_row(report))

    inbound_filter = [InboundMessage.customer_id == customer_id]
    if customer.phone:
        inbound_filter.append(InboundMessage.from_address.in_(_phone_forms(customer.phone)))
    suppression_filter = [Suppression.customer_id == customer_id]
    for channel, address in addresses.items():
        suppression_filter.append(
            (Suppression.channel == channel) & (Suppression.address == address)
        )

    stats = await session.get(CustomerStats, customer_id)
    computed = await customer_context(session, customer_id)
    return {
        "customer_id": customer_id,
        "exported_at": datetime.now(UTC).isoformat(),
        "erased_at": (customer.fields_as_of or {}).get("erased_at"),
        "profile": _row(customer),
        "consent_history": await rows(
            select(ConsentChange)
            .where(ConsentChange.customer_id == customer_id)
            .order_by(ConsentChange.occurred_at, ConsentChange.id)
        ),
        "computed": json.loads(json.dumps(computed, default=_plain)),
        "stats": _row(stats) if stats is not None else None,
        "events": await rows(
            select(Event)
            .where(
                or_(
                    Event.customer_id == customer_id,
                    Event.order_id.in_(orders) if orders else false(),
                )
            )
            .order_by(Event.occurred_at, Event.id)
        ),
        "messages": [{**_row(m), "events": events_by_message.get(m.id, [])} for m in messages],
        "inbound_messages": await rows(
            select(InboundMessage).where(or_(*inbound_filter)).order_by(InboundMessage.id)
        ),
        "coupons": await rows(
            select(Coupon).where(Coupon.customer_id == customer_id).order_by(Coupon.created_at)
        ),
        "journey_entries": await rows(
            select(JourneyEntry)
            .where(JourneyEntry.customer_id == customer_id)
            .order_by(JourneyEntry.entered_at, JourneyEntry.id)
        ),
        "journey_claims": await rows(
            select(JourneyClaim)
            .where(JourneyClaim.customer_id == customer_id)
            .order_by(JourneyClaim.claimed_at)
        ),
        "split_assignments": await rows(
            select(SplitAssignment)
            .where(SplitAssignment.customer_id == customer_id)
            .order_by(SplitAssignment.assigned_at)
        ),
        "attributions": await rows(
            select(Attribution)
            .where(Attribution.customer_id == customer_id)
            .order_by(Attribution.ordered_at)
        ),
        "purchases": await rows(
            select(ProductPurchase)
            .where(ProductPurchase.customer_id == customer_id)
            .order_by(ProductPurchase.purchased_at, ProductPurchase.sku)
        ),
        "product_interests": await rows(
            select(ProductInterest)
            .where(ProductInterest.customer_id == customer_id)
            .order_by(ProductInterest.last_at)
        ),
        "back_in_stock_subscriptions": await rows(
            select(BackInStockSubscription)
            .where(BackInStockSubscription.customer_id == customer_id)
            .order_by(BackInStockSubscription.subscribed_at)
        ),
        "payment_links": await rows(
            select(PaymentLink)
            .where(PaymentLink.order_id.in_(orders))
            .order_by(PaymentLink.created_at)
        )
        if orders
        else [],
        "refunds": await rows(
            select(Refund).where(Refund.order_id.in_(orders)).order_by(Refund.created_at)
        )
        if orders
        else [],
        "suppressions": await rows(
            select(Suppression).where(or_(*suppression_filter)).order_by(Suppression.id)
        ),
    }


# Erasure.


@dataclass
class Erasure:
    customer_id: str
    erased_at: datetime
    counts: dict[str, int] = field(default_factory=dict)
    journeys_terminated: list[str] = field(default_factory=list)


def _scrub(value: Any, needles: list[str]) -> tuple[Any, bool]:
    """``value`` with every string containing one of ``needles`` (case-insensitively)
    replaced by None; and whether anything changed."""
    if isinstance(value, str):
        low = value.lower()
        return (None, True) if any(n in low for n in needles) else (value, False)
    if isinstance(value, dict):
        changed = False
        out: dict[str, Any] = {}
        for key, item in value.items():
            new, hit = _scrub(item, needles)
            out[key] = new
            changed |= hit
        return out, changed
    if isinstance(value, list):
        items = [_scrub(item, needles) for item in value]
        return [i for i, _ in items], any(hit for _, hit in items)
    return value, False


def _needles(customer: Customer) -> list[str]:
    out = []
    for value in (customer.email, customer.phone, customer.name):
        if value and len(value.strip()) >= 3:
            out.append(value.strip().lower())
    if customer.phone:
        out.append(customer.phone.strip().lstrip("+").lower())
    return out


def _scrub_event_payload(payload: dict[str, Any], customer_id: str, needles: list[str]) -> Any:
    out = dict(payload)
    if isinstance(out.get("customer"), dict):
        out["customer"] = {"id": customer_id}
    data = out.get("data")
    if isinstance(data, dict):
        data = dict(data)
        shipping = data.get("shipping")
        if isinstance(shipping, dict):
            data["shipping"] = {k: v for k, v in shipping.items() if k == "country"}
        for key in ("city", "postal_code", "address", "address1", "address2", "name", "email"):
            data.pop(key, None)
        out["data"] = data
    scrubbed, _ = _scrub(out, needles)
    return scrubbed


def _canonical_sha256(payload: Any) -> str:
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


async def erase(
    session: AsyncSession, customer_id: str, *, secret: str, now: datetime | None = None
) -> Erasure | None:
    """Remove or overwrite the customer's personal data in the session's transaction;
    None if there is no such customer. The caller commits, then ends their journeys."""
    customer = await session.get(Customer, customer_id, with_for_update=True)
    if customer is None:
        return None
    at = now or datetime.now(UTC)
    result = Erasure(customer_id=customer_id, erased_at=at)
    counts = result.counts
    needles = _needles(customer)
    addresses = _addresses(customer)
    phone = customer.phone
    orders = await _order_ids(session, customer_id)

    # Events: the customer block, shipping details, any other copy of their identity.
    event_filter = or_(
        Event.customer_id == customer_id,
        Event.order_id.in_(orders) if orders else false(),
    )
    events = list(await session.scalars(select(Event).where(event_filter).with_for_update()))
    event_ids = []
    for event in events:
        cleaned = _scrub_event_payload(event.payload, customer_id, needles)
        if cleaned != event.payload:
            event.payload = cleaned
            event.payload_sha256 = _canonical_sha256(cleaned)
            event_ids.append(event.id)
    counts["events"] = len(event_ids)
    # Their deliveries towards Temporal that are done (pending ones still carry work).
    routes = 0
    if events and needles:
        for route in await session.scalars(
            select(EventRoute).where(
                EventRoute.event_id.in_([e.id for e in events]),
                EventRoute.status != "pending",
            )
        ):
            payload, hit1 = _scrub(route.signal_payload, needles)
            start, hit2 = _scrub(route.start_input, needles)
            if hit1 or hit2:
                route.signal_payload = payload
                route.start_input = start
                routes += 1
    counts["event_routes"] = routes

    # Messages: keep what analytics count, drop what was said and to whom.
    messages = list(
        await session.scalars(select(Message.id).where(Message.customer_id == customer_id))
    )
    if messages:
        await session.execute(
            update(Message)
            .where(Message.id.in_(messages))
            .values(
                to=None,
                subject=None,
                body=None,
                html=None,
                details={},
                reason=None,
                error_message=None,
            )
        )
        reports = await session.execute(
            update(MessageEvent).where(MessageEvent.message_id.in_(messages)).values(payload={})
        )
        counts["message_events"] = int(reports.rowcount or 0)  # type: ignore[attr-defined]
    counts["messages"] = len(messages)

    # Their replies.
    inbound_filter = [InboundMessage.customer_id == customer_id]
    if phone:
        inbound_filter.append(InboundMessage.from_address.in_(_phone_forms(phone)))
    inbound = await session.execute(
        update(InboundMessage)
        .where(or_(*inbound_filter))
        .values(
            body="",
            keyword=None,
            from_address=(hashed_address(secret, "sms", phone)[:64] if phone else "erased"),
        )
    )
    counts["inbound_messages"] = int(inbound.rowcount or 0)  # type: ignore[attr-defined]

    # Coupons: bound to them, kept for analytics; one they could still use is revoked.
    revoked = await session.execute(
        update(Coupon)
        .where(Coupon.customer_id == customer_id, Coupon.status == "active")
        .values(status="revoked", revoked_at=at, revoke_reason=ERASED_REASON)
    )
    counts["coupons_revoked"] = int(revoked.rowcount or 0)  # type: ignore[attr-defined]

    # What they looked at and asked for.
    interests = await session.execute(
        delete(ProductInterest).where(ProductInterest.customer_id == customer_id)
    )
    counts["product_interests"] = int(interests.rowcount or 0)  # type: ignore[attr-defined]
    subscriptions = await session.execute(
        delete(BackInStockSubscription).where(BackInStockSubscription.customer_id == customer_id)
    )
    counts["back_in_stock_subscriptions"] = int(subscriptions.rowcount or 0)  # type: ignore[attr-defined]
    await session.execute(
        update(ProductPurchase)
        .where(ProductPurchase.customer_id == customer_id)
        .values(replenish_due_at=None)
    )
    await session.execute(
        update(CustomerStats).where(CustomerStats.customer_id == customer_id).values(city=None)
    )

    # Journeys that will not end by themselves (their workflows are terminated below).
    ended = await session.execute(
        update(JourneyEntry)
        .where(JourneyEntry.customer_id == customer_id, JourneyEntry.exited_at.is_(None))
        .values(exited_at=at, exit_reason="erased")
    )
    counts["journey_entries_ended"] = int(ended.rowcount or 0)  # type: ignore[attr-defined]

    # Suppressions: the address only as a keyed hash; and "erased" on every channel.
    suppressions = 0
    for channel, address in addresses.items():
        hashed = hashed_address(secret, channel, address)
        rows = list(
            await session.scalars(
                select(Suppression).where(
                    Suppression.channel == channel,
                    or_(Suppression.address == address, Suppression.customer_id == customer_id),
                    ~Suppression.address.startswith("hmac-sha256:"),
                )
            )
        )
        for row in rows:
            row.address = hashed_address(secret, channel, row.address)
            row.detail = None
            suppressions += 1
        await session.flush()
        await session.execute(
            insert(Suppression)
            .values(
                channel=channel,
                address=hashed,
                scope="marketing",
                reason="erased",
                source="privacy",
                customer_id=customer_id,
            )
            .on_conflict_do_nothing(
                index_elements=["channel", "address", "scope"],
                index_where=Suppression.lifted_at.is_(None),
            )
        )
    await session.execute(
        update(Suppression).where(Suppression.customer_id == customer_id).values(detail=None)
    )
    counts["suppressions_hashed"] = suppressions

    # The profile: a tombstone no older event can refill.
    for channel in CHANNELS:
        previous = getattr(customer, f"consent_{channel}")
        if previous:
            session.add(
                ConsentChange(
                    customer_id=customer_id,
                    channel=channel,
                    granted=False,
                    previous=previous,
                    source="erasure",
                    occurred_at=at,
                )
            )
        setattr(customer, f"consent_{channel}", False)
    for name in ("email", "phone", "name", "birthday"):
        setattr(customer, name, None)
    customer.attributes = {}
    stamp = at.isoformat()
    as_of = dict.fromkeys(PROFILE_FIELDS, stamp)
    as_of.update({f"consent.{channel}": stamp for channel in CHANNELS})
    as_of["erased_at"] = stamp
    customer.fields_as_of = as_of
    await session.flush()
    return result


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
