"""Which workflows an accepted event must reach, and with what signal.

Each delivery is computed at intake and stored (``event_routes``) in the same transaction
as the event, fully rendered: the dispatcher only replays stored calls, so a deploy that
changes this module never changes how an already-accepted event is delivered.

Timers count on Sutra's clock (README "Events"): an order's payment clocks start when its
``order.placed`` was received, and a late cart event (received more than
``SUTRA_EVENT_LATE_AFTER`` after it happened) updates a running cart but starts none, so
a cart idle for weeks is never "abandoned" on arrival and reminded at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from config.settings import Settings
from contracts import search_attributes as sa
from contracts import workflow_ids
from contracts.carts import CartEvent, CartItem, CartSnapshot, StartCartInput
from contracts.events import (
    CartUpdated,
    CheckoutStarted,
    OrderCancelled,
    OrderDelivered,
    OrderOutForDelivery,
    OrderPacked,
    OrderPlaced,
    OrderRto,
    OrderShipped,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
)
from contracts.names import CART_WORKFLOW, EVENT_SIGNAL, ORDER_WORKFLOW
from contracts.orders import OrderEvent, OrderLine, PlacedOrder, StartOrderInput

_ORDER_PROGRESS = (
    OrderPacked | OrderShipped | OrderOutForDelivery | OrderDelivered | OrderCancelled | OrderRto
)


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


def routes_for(
    event: Any,
    settings: Settings,
    placed_before: frozenset[str] = frozenset(),
    *,
    received_at: datetime,
) -> list[Route]:
    """``received_at``: when intake accepted the event (its ``occurred_at`` is never later).
    ``placed_before``: orders whose ``order.placed`` was accepted by an earlier
    transaction, so their workflow exists (or existed): events for them only signal it,
    and one that finds it ended is told to the ended order, never starting a fresh run."""
    if isinstance(event, CartUpdated | CheckoutStarted):
        late = received_at - event.occurred_at > settings.event_late_after
        return [_cart_activity(event, settings, late=late)]
    if isinstance(event, OrderPlaced):
        routes = [_order_placed(event, received_at), _customer_ordered(event)]
        if event.data.cart_id:
            routes.insert(1, _cart_ordered(event))
        return routes
    if isinstance(event, PaymentCaptured | PaymentFailed | PaymentRefunded):
        data = event.data
        signal = OrderEvent(
            event_id=event.id,
            type=event.type,
            occurred_at=event.occurred_at,
            amount=data.amount,
            currency=data.currency,
            payment_id=data.payment_id,
            provider=data.provider,
            purpose=getattr(data, "purpose", None),
            refund_id=getattr(data, "refund_id", None),
            reason=data.reason,
        )
        return [_to_order(data.order_id, event.customer_id, signal, placed_before)]
    if isinstance(event, _ORDER_PROGRESS):
        progress = event.data
        signal = OrderEvent(
            event_id=event.id,
            type=event.type,
            occurred_at=event.occurred_at,
            tracking_url=progress.tracking_url,
            carrier=progress.carrier,
            reason=progress.reason,
        )
        return [_to_order(progress.order_id, event.customer_id, signal, placed_before)]
    # Lifecycle and product workflows subscribe here as they are built.
    return []


def _order_placed(event: OrderPlaced, received_at: datetime) -> Route:
    data = event.data
    placed = PlacedOrder(
        order_id=data.order_id,
        customer_id=event.customer.id,
        cart_id=data.cart_id,
        items=[OrderLine.model_validate(item.model_dump()) for item in data.items],
        total=data.total,
        currency=data.currency,
        payment_type=data.payment_type,
        payment_status=data.payment_status,
        upfront_amount=data.upfront_amount,
        remaining_amount=data.remaining_amount,
        shipping=data.shipping.model_dump(exclude_none=True) if data.shipping else {},
        # The order's clocks (payment deadline, reminders) start when Sutra heard of it: an
        # order.placed that arrives a day late still gives the customer the whole window.
        placed_at=received_at,
    )
    signal = OrderEvent(
        event_id=event.id, type=event.type, occurred_at=event.occurred_at, placed=placed
    )
    return _to_order(data.order_id, event.customer.id, signal)


def _to_order(
    order_id: str,
    customer_id: str | None,
    signal: OrderEvent,
    placed_before: frozenset[str] = frozenset(),
) -> Route:
    """An order event for an order never placed starts the order's workflow: one that
    overtakes ``order.placed`` waits inside it for the placement. For a placed order it is
    a signal; the dispatcher tells an ended order's events to the ended order."""
    attributes = {sa.ORDER_ID.name: order_id}
    if customer_id:
        attributes[sa.CUSTOMER_ID.name] = customer_id
    return Route(
        workflow_id=workflow_ids.order(order_id),
        workflow_type=ORDER_WORKFLOW,
        kind="signal" if order_id in placed_before else "signal_with_start",
        signal_payload=signal.model_dump(mode="json"),
        start_input=StartOrderInput(order_id=order_id).model_dump(mode="json"),
        search_attributes=attributes,
        summary=f"Order {order_id}" + (f" of customer {customer_id}" if customer_id else ""),
    )


def _cart_activity(
    event: CartUpdated | CheckoutStarted, settings: Settings, *, late: bool
) -> Route:
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
    if late:
        return Route(
            workflow_id=workflow_ids.cart(data.cart_id),
            workflow_type=CART_WORKFLOW,
            kind="signal",
            signal_payload=signal.model_dump(mode="json"),
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
