"""Event intake: persist first, exactly once per id, then leave delivery to the dispatcher.

Clocks (README "Events"): an event's ``occurred_at`` is stored as sent in its payload,
but everywhere it drives something (the events row, customer facts, workflows) it counts
on Sutra's clock: never later than when the event was received. How far ahead a client's
clock may run is checked before intake (``future_skew``), per event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from config.settings import Settings
from contracts.errors import NotFound
from contracts.events import event_cart_id, event_order_id
from db.models import Event as EventRow
from services.customers import facts, profiles
from services.delivery import outbox
from services.intake.lifecycle_routes import lifecycle_routes
from services.intake.routing import routes_for

Status = Literal["accepted", "duplicate"]


def _canonical(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def span(delta: timedelta) -> str:
    """A duration for people: "2 h 5 min 3 s", "4 days 1 h"."""
    seconds = int(abs(delta).total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} day{'s' if days != 1 else ''}"] if days else []
    parts += [f"{n} {unit}" for n, unit in ((hours, "h"), (minutes, "min")) if n]
    if secs or not parts:
        parts.append(f"{secs} s")
    return " ".join(parts[:3])


def future_skew(occurred_at: datetime, received_at: datetime, settings: Settings) -> str | None:
    """Why an ``occurred_at`` this far ahead of Sutra's clock is refused; None if it is not.

    A lead of hours is a sender's clock or time zone gone wrong (local time sent as UTC):
    taken as it is, it would hold a cart's idle timer or an order's deadline hours out, and
    its profile fields would outrank every correct update until that moment came."""
    ahead = occurred_at - received_at
    bound = settings.event_max_future_skew
    if ahead <= bound:
        return None
    return (
        f"{occurred_at.isoformat().replace('+00:00', 'Z')} is {span(ahead)} ahead of Sutra's "
        f"clock ({received_at.isoformat(timespec='seconds').replace('+00:00', 'Z')}); "
        f"at most {span(bound)} is accepted (SUTRA_EVENT_MAX_FUTURE_SKEW): check the "
        "sender's clock and that it sends its UTC offset"
    )


def _on_our_clock(event: Any, received_at: datetime) -> Any:
    if event.occurred_at <= received_at:
        return event
    return event.model_copy(update={"occurred_at": received_at})


async def ingest(
    session: AsyncSession,
    events: Sequence[Any],
    *,
    settings: Settings,
    api_key_id: UUID | None,
    received_at: datetime | None = None,
) -> list[Status]:
    """Store the events not seen before and their deliveries; one status per input event.

    The insert is the idempotency check: ``ON CONFLICT DO NOTHING`` makes a concurrent
    retry of the same id wait for the first and then report it as a duplicate.
    ``received_at`` is Sutra's clock at acceptance (now, unless a test runs its own).
    """
    received = received_at or datetime.now(UTC)
    sent = list(events)
    events = [_on_our_clock(event, received) for event in sent]
    first: dict[str, int] = {}
    for index, event in enumerate(events):
        first.setdefault(event.id, index)
    rows = []
    for event_id in sorted(first):  # one lock order for concurrent batches
        event = events[first[event_id]]
        payload = sent[first[event_id]].model_dump(mode="json", exclude_none=True)
        rows.append(
            {
                "id": event.id,
                "type": event.type,
                "occurred_at": event.occurred_at,
                "received_at": received,
                "customer_id": event.customer_id,
                "cart_id": event_cart_id(event),
                "order_id": event_order_id(event),
                "api_key_id": api_key_id,
                "payload": payload,
                "payload_sha256": hashlib.sha256(_canonical(payload).encode()).hexdigest(),
            }
        )
    inserted: set[str] = set()
    if rows:
        # executemany form: SQLAlchemy batches it into few statements and caches them,
        # where a single giant VALUES list would be compiled afresh every time.
        result = await session.execute(
            insert(EventRow).on_conflict_do_nothing().returning(EventRow.id), rows
        )
        inserted = set(result.scalars())

    statuses: list[Status] = []
    accepted: list[Any] = []
    for index, event in enumerate(events):
        if event.id in inserted and first[event.id] == index:
            statuses.append("accepted")
            accepted.append(event)
        else:
            statuses.append("duplicate")
    if not accepted:
        return statuses

    await profiles.upsert_from_events(session, accepted)
    await facts.record(session, accepted)
    placed_before = await _placed_before(session, accepted)
    deliveries = [
        (event.id, route)
        for event in accepted
        for route in routes_for(event, settings, placed_before, received_at=received)
    ]
    # A late event is history (a backfill, a replayed queue): it informs journeys already
    # running but starts none, so a welcome or a review request never goes out weeks late.
    fresh = [e for e in accepted if received - e.occurred_at <= settings.event_late_after]
    deliveries += await lifecycle_routes(session, accepted, starting=fresh)
    if await outbox.add_deliveries(session, deliveries):
        await outbox.notify(session)
    return statuses


async def received(session: AsyncSession, event_id: str) -> EventRow:
    """The event Sutra accepted with this id; ``NotFound`` when there is none."""
    event = await session.get(EventRow, event_id)
    if event is None:
        raise NotFound(f"no event with id {event_id!r}")
    return event


async def _placed_before(session: AsyncSession, events: Sequence[Any]) -> frozenset[str]:
    """Orders among these events' whose ``order.placed`` an earlier transaction accepted:
    its delivery has a lower ``seq``, so their workflow is there before these events are."""
    order_ids = {
        order_id
        for event in events
        if event.type != "order.placed" and (order_id := event_order_id(event))
    }
    if not order_ids:
        return frozenset()
    found = await session.scalars(
        select(EventRow.order_id).where(
            EventRow.type == "order.placed",
            EventRow.order_id.in_(order_ids),
            EventRow.id.not_in([event.id for event in events]),
        )
    )
    return frozenset(o for o in found if o is not None)
