"""Customer profiles, upserted from the ``customer`` block that events carry."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.errors import NotFound
from contracts.events import CustomerIn
from db.models import ConsentChange, Customer, CustomerStats
from services.customers import attributes as customer_attributes
from services.customers import segments

PROFILE_FIELDS = ("email", "phone", "name", "locale", "timezone", "currency", "country", "birthday")
CHANNELS = ("email", "sms", "whatsapp")


class _Sighting:
    __slots__ = ("customer", "event_currency", "event_id", "occurred_at")

    def __init__(self, event: Any) -> None:
        self.customer: CustomerIn = event.customer
        self.event_id: str = event.id
        self.occurred_at: datetime = event.occurred_at
        # What a customer shops in is what their carts and orders are priced in.
        self.event_currency: str | None = getattr(event.data, "currency", None)


async def upsert_from_events(session: AsyncSession, events: Sequence[Any]) -> None:
    """Apply each event's customer block, field by field, newest ``occurred_at`` winning."""
    sightings: dict[str, list[_Sighting]] = defaultdict(list)
    for event in events:
        customer = getattr(event, "customer", None)
        if customer is not None:
            sightings[customer.id].append(_Sighting(event))
    if not sightings:
        return
    # Sorted ids: concurrent batches then lock rows in one order and cannot deadlock.
    ids = sorted(sightings)
    await session.execute(
        insert(Customer).on_conflict_do_nothing(index_elements=[Customer.id]),
        [{"id": cid, "first_seen_at": min(s.occurred_at for s in sightings[cid])} for cid in ids],
    )
    rows = await session.scalars(
        select(Customer).where(Customer.id.in_(ids)).order_by(Customer.id).with_for_update()
    )
    for row in rows:
        for sighting in sorted(sightings[row.id], key=lambda s: s.occurred_at):
            _apply(session, row, sighting)


def _apply(session: AsyncSession, row: Customer, sighting: _Sighting) -> None:
    customer, at = sighting.customer, sighting.occurred_at
    as_of = dict(row.fields_as_of or {})

    def newer(key: str) -> bool:
        previous = as_of.get(key)
        return previous is None or at >= datetime.fromisoformat(previous)

    for field in PROFILE_FIELDS:
        value = getattr(customer, field)
        if field == "currency" and value is None:
            value = sighting.event_currency
        if value is not None and newer(field):
            setattr(row, field, value)
            as_of[field] = at.isoformat()

    extras = customer.model_extra or {}
    if extras:
        attributes = dict(row.attributes or {})
        for key, value in extras.items():
            if newer(f"attributes.{key}"):
                attributes[key] = value
                as_of[f"attributes.{key}"] = at.isoformat()
        row.attributes = attributes

    if customer.consent is not None:
        for channel in CHANNELS:
            granted = getattr(customer.consent, channel)
            key = f"consent.{channel}"
            if granted is None or not newer(key):
                continue
            previous = getattr(row, f"consent_{channel}")
            if previous != granted:
                session.add(
                    ConsentChange(
                        customer_id=row.id,
                        channel=channel,
                        granted=granted,
                        previous=previous,
                        source="event",
                        event_id=sighting.event_id,
                        occurred_at=at,
                    )
                )
                setattr(row, f"consent_{channel}", granted)
            as_of[key] = at.isoformat()

    row.fields_as_of = as_of
    if at < row.first_seen_at:
        row.first_seen_at = at


async def get(session: AsyncSession, customer_id: str) -> Customer:
    """The customer's profile; ``NotFound`` when Sutra has never seen them."""
    customer = await session.get(Customer, customer_id)
    if customer is None:
        raise NotFound(f"no customer with id {customer_id!r}")
    return customer


async def consent_history(session: AsyncSession, customer_id: str) -> list[ConsentChange]:
    """Every consent change recorded for the customer, oldest first."""
    rows = await session.scalars(
        select(ConsentChange)
        .where(ConsentChange.customer_id == customer_id)
        .order_by(ConsentChange.occurred_at, ConsentChange.id)
    )
    return list(rows)


async def customer_context(
    session: AsyncSession, customer_id: str, now: datetime | None = None
) -> dict[str, Any]:
    """What conditions and templates may read of a customer, computed fresh: the profile,
    the computed attributes kept in ``customer_stats``, segment memberships and
    recommendations. ``now`` dates ``days_since_last_order``."""
    customer = await session.get(Customer, customer_id)
    if customer is None:
        return {
            "id": customer_id,
            "orders_count": 0,
            "total_spent": "0",
            "attributes": {},
            "segments": [],
            "recommendations": [],
        }
    stats = await session.get(CustomerStats, customer_id)
    channel = (await customer_attributes.preferred_channels(session, [customer_id])).get(
        customer_id
    )
    context = customer_attributes.attributes(customer, stats, now or datetime.now(UTC), channel)
    context["segments"] = segments.memberships(await segments.list_all(session), context)
    context["recommendations"] = await customer_attributes.recommendations(session, customer_id)
    return context
