"""Which workflows an accepted event must reach, and with what signal.

Each delivery is computed at intake and stored (``event_routes``) in the same transaction
as the event, fully rendered: the dispatcher only replays stored calls, so a deploy that
changes this module never changes how an already-accepted event is delivered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from config.settings import Settings
from contracts import search_attributes as sa
from contracts import workflow_ids
from contracts.carts import CartEvent, CartItem, CartSnapshot, StartCartInput
from contracts.events import CartUpdated, CheckoutStarted, OrderPlaced

CART_WORKFLOW = "CartWorkflow"
EVENT_SIGNAL = "event"


@dataclass(frozen=True)
class Route:
    workflow_id: str
    workflow_type: str
    # "signal_with_start" creates the workflow if needed; "signal" only reaches a running one.
    kind: str
    signal_payload: dict[str, Any]
    start_input: dict[str, Any] | None = None
    search_attributes: dict[str, str] = field(default_factory=dict)
    summary: str | None = None
    signal_name: str = EVENT_SIGNAL
    target_query: str | None = None


def routes_for(event: Any, settings: Settings) -> list[Route]:
    if isinstance(event, CartUpdated | CheckoutStarted):
        return [_cart_activity(event, settings)]
    if isinstance(event, OrderPlaced):
        routes = [_customer_ordered(event)]
        if event.data.cart_id:
            routes.insert(0, _cart_ordered(event))
        return routes
    # Order, lifecycle and product workflows subscribe here as they are built.
    return []


def _cart_activity(event: CartUpdated | CheckoutStarted, settings: Settings) -> Route:
    data = event.data
    snapshot = CartSnapshot(
        currency=data.currency,
        items=[CartItem.model_validate(item.model_dump()) for item in data.items],
        total=data.computed_total,
        checkout_url=data.checkout_url,
        as_of=event.occurred_at,
    )
    signal = CartEvent(
        event_id=event.id,
        type=event.type,
        occurred_at=event.occurred_at,
        customer_id=event.customer.id,
        snapshot=snapshot,
    )
    start = StartCartInput(
        cart_id=data.cart_id,
        customer_id=event.customer.id,
        idle_after=settings.cart_idle_after,
        expire_after=settings.cart_expire_after,
    )
    return Route(
        workflow_id=workflow_ids.cart(data.cart_id),
        workflow_type=CART_WORKFLOW,
        kind="signal_with_start",
        signal_payload=signal.model_dump(mode="json"),
        start_input=start.model_dump(mode="json"),
        search_attributes={
            sa.CUSTOMER_ID.name: event.customer.id,
            sa.CART_ID.name: data.cart_id,
        },
        summary=f"Cart {data.cart_id} of customer {event.customer.id}",
    )


def _order_signal(event: OrderPlaced) -> dict[str, Any]:
    signal = CartEvent(
        event_id=event.id,
        type="order.placed",
        occurred_at=event.occurred_at,
        customer_id=event.customer.id,
        order_id=event.data.order_id,
        order_total=event.data.total,
        cart_id=event.data.cart_id,
    )
    return signal.model_dump(mode="json")


def _customer_ordered(event: OrderPlaced) -> Route:
    """Every running cart journey of the customer hears of the order: a rule may say any
    order by the customer ends its journey. (The ordered cart itself dedupes by event id.)"""
    query = f'{sa.equals(sa.CUSTOMER_ID, event.customer.id)} AND WorkflowType = "{CART_WORKFLOW}"'
    return Route(
        workflow_id=f"customer:{event.customer.id}",
        workflow_type="",
        kind="signal_query",
        signal_payload=_order_signal(event),
        target_query=query,
    )


def _cart_ordered(event: OrderPlaced) -> Route:
    cart_id = event.data.cart_id
    assert cart_id is not None
    return Route(
        workflow_id=workflow_ids.cart(cart_id),
        workflow_type=CART_WORKFLOW,
        kind="signal",
        signal_payload=_order_signal(event),
    )
