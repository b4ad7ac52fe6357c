"""Event intake: persist first, exactly once per id, then leave delivery to the dispatcher."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Literal
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from config.settings import Settings
from contracts.events import event_cart_id, event_order_id
from db.models import Event as EventRow
from db.models import EventRoute
from services import customer_facts, customers
from services.lifecycle_routes import lifecycle_routes
from services.routing import routes_for

Status = Literal["accepted", "duplicate"]
ROUTES_CHANNEL = "sutra_routes"


def _canonical(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


async def ingest(
    session: AsyncSession,
    events: Sequence[Any],
    *,
    settings: Settings,
    api_key_id: UUID | None,
) -> list[Status]:
    """Store the events not seen before and their deliveries; one status per input event.

    The insert is the idempotency check: ``ON CONFLICT DO NOTHING`` makes a concurrent
    retry of the same id wait for the first and then report it as a duplicate.
    """
    first: dict[str, Any] = {}
    for event in events:
        first.setdefault(event.id, event)
    rows = []
    for event_id in sorted(first):  # one lock order for concurrent batches
        event = first[event_id]
        payload = event.model_dump(mode="json", exclude_none=True)
        rows.append(
            {
                "id": event.id,
                "type": event.type,
                "occurred_at": event.occurred_at,
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
    for event in events:
        if event.id in inserted and first[event.id] is event:
            statuses.append("accepted")
            accepted.append(event)
        else:
            statuses.append("duplicate")
    if not accepted:
        return statuses

    await customers.upsert_from_events(session, accepted)
    await customer_facts.record(session, accepted)
    placed_before = await _placed_before(session, accepted)
    route_rows = [
        {"event_id": event.id, **asdict(route)}
        for event in accepted
        for route in routes_for(event, settings, placed_before)
    ]
    route_rows += [
        {"event_id": event_id, **asdict(route)}
        for event_id, route in await lifecycle_routes(session, accepted)
    ]
    if route_rows:
        await session.execute(insert(EventRoute), route_rows)
        # Delivered to listeners only when this transaction commits.
        await session.execute(select(func.pg_notify(ROUTES_CHANNEL, "")))
    return statuses


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
