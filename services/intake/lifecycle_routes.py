"""Which lifecycle journeys an accepted event starts or tells, computed at intake in the
event's own transaction (like every route), so the decision is as durable as the event.

- An event that triggers active rules starts one journey per rule:
  ``journey/{rule}/{customer}`` for customer.created, ``.../{order_id}`` for order events,
  ``.../{event_id}`` for a back-in-stock subscription.
- A product event (back in stock, price dropped) with an active rule starts one fan-out,
  ``fanout/{event_id}``, which finds the audience in batches.
- An order is told to the customer's lifecycle journeys that are running or ended within
  the last 30 days: it may end them (welcome, win-back, replenishment) and is credited to
  their messages within the attribution window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import search_attributes as sa
from contracts import workflow_ids
from contracts.conditions import evaluate
from contracts.events import OrderDelivered, OrderPlaced
from contracts.fanout import FanoutInput
from contracts.lifecycle import LifecycleEvent, LifecycleInput
from contracts.names import EVENT_SIGNAL, FANOUT_WORKFLOW, LIFECYCLE_WORKFLOW
from contracts.rules import FANOUT_TRIGGERS, RuleDefinition
from db.models import Event, JourneyEntry, Rule, RuleVersion
from services.customers import profiles as customer_profiles
from services.intake.routing import Route

_CUSTOMER_TRIGGERS = (
    "customer.created",
    "order.placed",
    "order.delivered",
    "back_in_stock.subscribed",
)
# How long after a journey ended an order may still be credited to it: longer than any
# sensible attribution window; the journey itself waits only its rule's window.
_TELL_ORDERS_FOR = timedelta(days=30)


async def lifecycle_routes(
    session: AsyncSession, events: Sequence[Any], *, starting: Sequence[Any] | None = None
) -> list[tuple[str, Route]]:
    """The lifecycle routes of accepted events; only those in ``starting`` (default: all)
    may start journeys and fan-outs, every order is told to running journeys."""
    may_start = {e.id for e in (events if starting is None else starting)}
    types = {event.type for event in events if event.id in may_start}
    rules: dict[str, list[tuple[str, RuleDefinition]]] = {}
    if types & {*_CUSTOMER_TRIGGERS, *FANOUT_TRIGGERS}:
        rows = await session.execute(
            select(Rule.trigger_event, Rule.id, RuleVersion.definition)
            .join(
                RuleVersion,
                (RuleVersion.rule_id == Rule.id) & (RuleVersion.version == Rule.version),
            )
            .where(Rule.status == "active", Rule.trigger_event.in_(types))
            .order_by(Rule.priority, Rule.created_at, Rule.id)
        )
        for trigger, rule_id, definition in rows.all():
            rules.setdefault(trigger, []).append(
                (rule_id, RuleDefinition.model_validate(definition))
            )
    placed = await _placed_orders(
        session, [e for e in events if isinstance(e, OrderDelivered) and e.id in may_start]
    )
    profiles: dict[str, dict[str, Any]] = {}
    routes: list[tuple[str, Route]] = []
    for event in events:
        if event.id in may_start and event.type in FANOUT_TRIGGERS and rules.get(event.type):
            routes.append((event.id, _fanout(event)))
        if event.id in may_start and event.type in _CUSTOMER_TRIGGERS:
            started = await _start(session, event, rules.get(event.type, []), placed, profiles)
            routes += [(event.id, route) for route in started]
        if isinstance(event, OrderPlaced):
            routes += [(event.id, route) for route in await _tell_order(session, event)]
    return routes


async def _placed_orders(
    session: AsyncSession, delivered: list[OrderDelivered]
) -> dict[str, dict[str, Any]]:
    """The order.placed payloads of delivered orders: their customer and lines."""
    if not delivered:
        return {}
    rows = await session.execute(
        select(Event.order_id, Event.customer_id, Event.payload).where(
            Event.type == "order.placed",
            Event.order_id.in_([e.data.order_id for e in delivered]),
        )
    )
    return {
        order_id: {"customer_id": customer_id, **payload.get("data", {})}
        for order_id, customer_id, payload in rows.all()
    }


async def _start(
    session: AsyncSession,
    event: Any,
    rules: list[tuple[str, RuleDefinition]],
    placed: dict[str, dict[str, Any]],
    profiles: dict[str, dict[str, Any]],
) -> list[Route]:
    """One journey per rule whose entry conditions the customer meets, judged on the
    profile this event just updated; the journey judges again, on fresh data, as it
    enters. A customer who cannot enter gets no workflow at all."""
    if not rules:
        return []
    customer_id: str | None = event.customer_id
    key: str | None = None
    context: dict[str, Any] = {}
    if isinstance(event, OrderPlaced):
        key = event.data.order_id
        context = {"order": _order(event.model_dump(mode="json")["data"])}
    elif isinstance(event, OrderDelivered):
        order = placed.get(event.data.order_id)
        if order is None:
            return []  # a delivery of an order Sutra never saw placed: nobody to thank
        customer_id = customer_id or order["customer_id"]
        key = event.data.order_id
        context = {"order": _order(order)}
    elif event.type == "back_in_stock.subscribed":
        key = event.id
        context = {"product": event.model_dump(mode="json")["data"]}
    if customer_id is None:
        return []
    if customer_id not in profiles:
        profiles[customer_id] = await customer_profiles.customer_context(session, customer_id)
    judged = {
        **context,
        "event": {"type": event.type, "data": context},
        "customer": profiles[customer_id],
    }
    routes = []
    for rule_id, definition in rules:
        if not evaluate(definition.conditions, judged):
            continue
        journey = LifecycleInput(
            rule_id=rule_id,
            customer_id=customer_id,
            key=key,
            trigger=event.type,
            context=context,
            triggered_at=event.occurred_at,
        )
        routes.append(
            Route(
                workflow_id=journey.workflow_id,
                workflow_type=LIFECYCLE_WORKFLOW,
                kind="start",
                signal_payload={},
                start_input=journey.model_dump(mode="json"),
                search_attributes={sa.CUSTOMER_ID.name: customer_id, sa.RULE_ID.name: rule_id},
                summary=f"{event.type} journey of customer {customer_id} on rule {rule_id}",
            )
        )
    return routes


def _order(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": data.get("order_id"),
        "total": data.get("total"),
        "currency": data.get("currency"),
        "items": [
            {
                "sku": item.get("sku"),
                "name": item.get("name"),
                "quantity": item.get("quantity"),
                "unit_price": item.get("unit_price"),
                "url": item.get("url"),
                "image_url": item.get("image_url"),
            }
            for item in data.get("items", [])
        ],
    }


def _fanout(event: Any) -> Route:
    data = event.model_dump(mode="json")["data"]
    fanout = FanoutInput(
        event_id=event.id,
        trigger=event.type,
        sku=event.data.sku,
        occurred_at=event.occurred_at,
        context={"product": data},
    )
    return Route(
        workflow_id=workflow_ids.fanout(event.id),
        workflow_type=FANOUT_WORKFLOW,
        kind="start",
        signal_payload={},
        start_input=fanout.model_dump(mode="json"),
        summary=f"{event.type} of {event.data.sku}: notify every interested customer",
    )


async def _tell_order(session: AsyncSession, event: OrderPlaced) -> list[Route]:
    journeys = await session.scalars(
        select(JourneyEntry.workflow_id)
        .where(
            JourneyEntry.customer_id == event.customer.id,
            JourneyEntry.run_id.is_not(None),
            or_(
                JourneyEntry.exited_at.is_(None),
                JourneyEntry.exited_at > event.occurred_at - _TELL_ORDERS_FOR,
            ),
        )
        .distinct()
    )
    signal = LifecycleEvent(
        event_id=event.id,
        type="order.placed",
        occurred_at=event.occurred_at,
        order_id=event.data.order_id,
        skus=[item.sku for item in event.data.items],
    ).model_dump(mode="json")
    return [
        Route(
            workflow_id=workflow_id,
            workflow_type=LIFECYCLE_WORKFLOW,
            kind="signal",
            signal_payload=signal,
            signal_name=EVENT_SIGNAL,
        )
        for workflow_id in journeys
    ]
