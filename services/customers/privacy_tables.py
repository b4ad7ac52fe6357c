"""What the table list of services/customers/privacy.py is made of (that module's docstring
is the policy; its ``TABLES`` say, per table, how the customer's rows are found, how the
export orders them and what erasure does to them).

``Scope``: who the customer is, read once before anything changes. Erasure's kinds:
``Keep`` the rows as they are (an anonymised analytics record, personal only through the
customer id), ``Delete`` them, ``Overwrite`` their personal fields, or a function of its own
where a table needs more than one statement: event payloads (and the done outbox rows
carrying them), messages with their provider reports, suppressions, the profile's tombstone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, false, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import (
    Attribution,
    Base,
    ConsentChange,
    Customer,
    Event,
    EventRoute,
    Message,
    MessageEvent,
    ProductPurchase,
    Suppression,
)
from services.customers.profiles import PROFILE_FIELDS, customer_context

CHANNELS = ("email", "sms", "whatsapp")
ERASED_REASON = "customer erased"


def hashed_address(secret: str, channel: str, address: str) -> str:
    """The keyed hash an erased address is remembered by (emails compare lower-case,
    phones without a ``whatsapp:`` prefix, as suppressions do)."""
    normal = address.strip().lower() if channel == "email" else address.strip()
    normal = normal.removeprefix("whatsapp:")
    digest = hmac.new(secret.encode(), f"{channel}:{normal}".encode(), hashlib.sha256)
    return "hmac-sha256:" + digest.hexdigest()


@dataclass
class Scope:
    """One customer's export or erasure: who they are, read before anything changes (the
    profile is erased first, the other tables after it still find them by these)."""

    customer: Customer
    customer_id: str
    phone: str | None
    addresses: dict[str, str]  # their suppression addresses per channel
    needles: list[str]  # their identity as it may appear inside payloads, lower-case
    orders: list[str]  # their orders' ids: events, payment links and refunds are found by them
    at: datetime
    secret: str
    counts: dict[str, int] = field(default_factory=dict)


async def scope_of(
    session: AsyncSession, customer: Customer, at: datetime, secret: str = ""
) -> Scope:
    return Scope(
        customer=customer,
        customer_id=customer.id,
        phone=customer.phone,
        addresses=_addresses(customer),
        needles=_needles(customer),
        orders=await _order_ids(session, customer.id),
        at=at,
        secret=secret,
    )


def _addresses(customer: Customer) -> dict[str, str]:
    out: dict[str, str] = {}
    if customer.email:
        out["email"] = customer.email.strip().lower()
    if customer.phone:
        out["sms"] = customer.phone.strip()
        out["whatsapp"] = customer.phone.strip()
    return out


def _needles(customer: Customer) -> list[str]:
    out = []
    for value in (customer.email, customer.phone, customer.name):
        if value and len(value.strip()) >= 3:
            out.append(value.strip().lower())
    if customer.phone:
        out.append(customer.phone.strip().lstrip("+").lower())
    return out


async def _order_ids(session: AsyncSession, customer_id: str) -> list[str]:
    ids: set[str] = set()
    for query in (
        select(Event.order_id).where(Event.customer_id == customer_id, Event.order_id.is_not(None)),
        select(ProductPurchase.order_id).where(ProductPurchase.customer_id == customer_id),
        select(Attribution.order_id).where(Attribution.customer_id == customer_id),
    ):
        ids.update(await session.scalars(query))
    return sorted(i for i in ids if i)


Found = Callable[[Scope], ColumnElement[bool]]
Exporter = Callable[[AsyncSession, Scope], Awaitable[Any]]
Eraser = Callable[[AsyncSession, Scope], Awaitable[None]]


@dataclass(frozen=True)
class Keep:
    """Erasure leaves the rows as they are."""


@dataclass(frozen=True)
class Delete:
    count: str | None = None


@dataclass(frozen=True)
class Overwrite:
    values: Callable[[Scope], dict[str, Any]]
    only: Found | None = None  # of the customer's rows, only these
    count: str | None = None


@dataclass(frozen=True)
class Table:
    key: str  # its section of the export
    model: type[Base]
    found: Found
    order_by: tuple[Any, ...]
    erase: Keep | Delete | Overwrite | Eraser
    one: bool = False  # one row (or null) rather than a list
    export: Exporter | None = None  # instead of its rows as they are


def row(obj: Base) -> dict[str, Any]:
    return {attr.key: plain(getattr(obj, attr.key)) for attr in obj.__mapper__.column_attrs}


def plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


async def rowcount(session: AsyncSession, statement: Any) -> int:
    result = await session.execute(statement)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def events_of(scope: Scope) -> ColumnElement[bool]:
    """Their events, and those of their orders (a shop's order events may lack the customer)."""
    return or_(
        Event.customer_id == scope.customer_id,
        Event.order_id.in_(scope.orders) if scope.orders else false(),
    )


# The sections that need more than their rows as they are.


async def export_computed(session: AsyncSession, scope: Scope) -> Any:
    computed = await customer_context(session, scope.customer_id)
    return json.loads(json.dumps(computed, default=plain))


async def export_messages(session: AsyncSession, scope: Scope) -> list[dict[str, Any]]:
    """Each message with the provider's reports about it."""
    messages = list(
        await session.scalars(
            select(Message)
            .where(Message.customer_id == scope.customer_id)
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
            events_by_message.setdefault(report.message_id, []).append(row(report))
    return [{**row(m), "events": events_by_message.get(m.id, [])} for m in messages]


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


async def erase_events(session: AsyncSession, scope: Scope) -> None:
    """The customer block, shipping details, any other copy of their identity; also in
    their deliveries towards Temporal that are done (pending ones still carry work)."""
    needles, counts = scope.needles, scope.counts
    events = list(await session.scalars(select(Event).where(events_of(scope)).with_for_update()))
    changed = 0
    for event in events:
        cleaned = _scrub_event_payload(event.payload, scope.customer_id, needles)
        if cleaned != event.payload:
            event.payload = cleaned
            event.payload_sha256 = _canonical_sha256(cleaned)
            changed += 1
    counts["events"] = changed
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


async def erase_messages(session: AsyncSession, scope: Scope) -> None:
    """Keep what analytics count, drop what was said and to whom."""
    messages = list(
        await session.scalars(select(Message.id).where(Message.customer_id == scope.customer_id))
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
        scope.counts["message_events"] = await rowcount(
            session,
            update(MessageEvent).where(MessageEvent.message_id.in_(messages)).values(payload={}),
        )
    scope.counts["messages"] = len(messages)


async def erase_suppressions(session: AsyncSession, scope: Scope) -> None:
    """The address only as a keyed hash; and "erased" on every channel."""
    hashed_count = 0
    for channel, address in scope.addresses.items():
        hashed = hashed_address(scope.secret, channel, address)
        rows = list(
            await session.scalars(
                select(Suppression).where(
                    Suppression.channel == channel,
                    or_(
                        Suppression.address == address,
                        Suppression.customer_id == scope.customer_id,
                    ),
                    ~Suppression.address.startswith("hmac-sha256:"),
                )
            )
        )
        for suppression in rows:
            suppression.address = hashed_address(scope.secret, channel, suppression.address)
            suppression.detail = None
            hashed_count += 1
        await session.flush()
        await session.execute(
            insert(Suppression)
            .values(
                channel=channel,
                address=hashed,
                scope="marketing",
                reason="erased",
                source="privacy",
                customer_id=scope.customer_id,
            )
            .on_conflict_do_nothing(
                index_elements=["channel", "address", "scope"],
                index_where=Suppression.lifted_at.is_(None),
            )
        )
    await session.execute(
        update(Suppression).where(Suppression.customer_id == scope.customer_id).values(detail=None)
    )
    scope.counts["suppressions_hashed"] = hashed_count


async def erase_profile(session: AsyncSession, scope: Scope) -> None:
    """A tombstone no older event can refill."""
    customer, at = scope.customer, scope.at
    for channel in CHANNELS:
        previous = getattr(customer, f"consent_{channel}")
        if previous:
            session.add(
                ConsentChange(
                    customer_id=customer.id,
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
