"""The outbox: the only writer of ``event_routes`` rows and of the dispatcher's wake-up call.

A delivery to a workflow is a row written in the caller's transaction, beside whatever made
it necessary (an accepted event, a provider's report, a rule paused): committed together or
not at all, so nothing accepted is lost and nothing rolled back is delivered. The dispatcher
(services/delivery/dispatcher.py) hands the rows to Temporal in ``seq`` order per workflow.
Callers add their rows, then ``notify`` once; neither commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import EventRoute

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# The dispatcher LISTENs here; a NOTIFY only saves it waiting for its next poll.
ROUTES_CHANNEL = "sutra_routes"


async def add_deliveries(
    session: AsyncSession, deliveries: Sequence[tuple[str, DataclassInstance]]
) -> bool:
    """Store accepted events' computed deliveries (event id, and a route whose fields are
    ``event_routes`` columns: services/intake/routing.py's ``Route``), in the order given,
    which is the order ``seq`` numbers them. Returns whether there were any."""
    rows = [{"event_id": event_id, **asdict(route)} for event_id, route in deliveries]
    if rows:
        await session.execute(insert(EventRoute), rows)
    return bool(rows)


def add_signal(
    session: AsyncSession,
    *,
    origin: str,
    workflow_id: str,
    signal_name: str,
    payload: dict[str, Any],
    target_query: str | None = None,
) -> None:
    """One signal not caused by an event (``origin``: a provider report, an inbound reply, a
    rule): to the running workflow ``workflow_id``, or with ``target_query`` to every running
    workflow that visibility query finds, ``workflow_id`` then naming the ordering lane
    (e.g. ``customer:c_1``). Neither starts a workflow."""
    session.add(
        EventRoute(
            event_id=None,
            origin=origin,
            workflow_id=workflow_id,
            workflow_type="",
            kind="signal" if target_query is None else "signal_query",
            signal_name=signal_name,
            signal_payload=payload,
            target_query=target_query,
        )
    )


async def routes_of(session: AsyncSession, event_id: str) -> list[EventRoute]:
    """The deliveries an accepted event made necessary, in the order they were written."""
    rows = await session.scalars(
        select(EventRoute).where(EventRoute.event_id == event_id).order_by(EventRoute.seq)
    )
    return list(rows)


async def notify(session: AsyncSession) -> None:
    """Wake the dispatcher: PostgreSQL delivers the NOTIFY to listeners only when the
    caller's transaction commits, so it never looks before the rows are there."""
    await session.execute(select(func.pg_notify(ROUTES_CHANNEL, "")))


# Deliveries that reached no running workflow, which ops may hand over again: the order or
# cart had ended (``delivered_to_closed``), or a signal found nothing running (``skipped``).
# A ``pending`` one is still the dispatcher's to retry (its ``last_error`` says why it
# fails); a copy would only wait behind it. A ``delivered`` one has arrived.
REDELIVERABLE = ("delivered_to_closed", "skipped")


async def redeliver(
    session: AsyncSession, event_id: str
) -> tuple[list[EventRoute], list[EventRoute]]:
    """Queue the event's undelivered routes again, as new ``pending`` rows (origin
    ``redelivery``) that the dispatcher hands to Temporal like any other: after whatever
    that workflow was sent since. Workflows ignore event ids they have seen, so a delivery
    that did arrive after all changes nothing. Returns (new rows, routes left as they are).
    The caller notifies and commits."""
    # A route redelivered before has a copy: the latest row per destination is its state.
    latest: dict[tuple[str, str, str, str | None], EventRoute] = {}
    for route in await routes_of(session, event_id):
        latest[(route.workflow_id, route.kind, route.signal_name, route.target_query)] = route
    requeued: list[EventRoute] = []
    left: list[EventRoute] = []
    for route in latest.values():
        if route.status not in REDELIVERABLE:
            left.append(route)
            continue
        copy = EventRoute(
            event_id=event_id,
            origin="redelivery",
            workflow_id=route.workflow_id,
            workflow_type=route.workflow_type,
            kind=route.kind,
            signal_name=route.signal_name,
            signal_payload=route.signal_payload,
            target_query=route.target_query,
            start_input=route.start_input,
            search_attributes=route.search_attributes,
            summary=route.summary,
        )
        session.add(copy)
        requeued.append(copy)
    await session.flush()
    for copy in requeued:
        await session.refresh(copy)
    return requeued, left
