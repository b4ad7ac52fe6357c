"""Contracts of the cart workflow (``cart/{cart_id}``): its input, signal, query and result."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from contracts.journeys import JourneyState
from contracts.orders import OrderLine

PREPARE_CART = "prepare_cart"


class CartStatus(StrEnum):
    active = "active"  # items in the cart, customer recently active
    empty = "empty"  # no items: nothing to recover
    abandoned = "abandoned"  # idle for the configured period with items in it
    converted = "converted"  # an order was placed for this cart
    expired = "expired"  # idle far past abandonment; the workflow has ended


class CartItem(BaseModel):
    sku: str
    name: str
    quantity: int
    unit_price: Decimal
    category: str | None = None
    product_id: str | None = None
    url: str | None = None
    image_url: str | None = None


class CartSnapshot(BaseModel):
    currency: str
    items: list[CartItem]
    total: Decimal
    checkout_url: str | None = None
    as_of: datetime = Field(description="occurred_at of the event this snapshot came from")


class CartEvent(BaseModel):
    """Signal ``event``: one accepted event that concerns this cart."""

    event_id: str
    type: Literal["cart.updated", "checkout.started", "order.placed"]
    occurred_at: datetime
    customer_id: str
    snapshot: CartSnapshot | None = None
    order_id: str | None = None
    order_total: Decimal | None = None
    # For order.placed: the cart it was placed for (another cart: the customer ordered).
    cart_id: str | None = None


class CartState(BaseModel):
    cart_id: str
    customer_id: str
    status: CartStatus = CartStatus.empty
    snapshot: CartSnapshot | None = None
    last_activity_at: datetime | None = None
    checkout_started_at: datetime | None = None
    abandoned_at: datetime | None = None
    order_id: str | None = None
    converted_at: datetime | None = None
    events_applied: int = 0
    last_reply_at: datetime | None = None
    idle_after: timedelta
    expire_after: timedelta
    journey: JourneyState | None = None
    journey_status: Literal["none", "running", "ended"] = "none"
    # The activity an earlier abandonment was checked against, when no rule admitted it:
    # the next abandonment (after more activity) is checked again.
    entry_checked_for: datetime | None = None
    rule_paused: bool = False
    ordered_elsewhere: str | None = None


class StartCartInput(BaseModel):
    cart_id: str
    customer_id: str
    idle_after: timedelta = timedelta(hours=1)
    expire_after: timedelta = timedelta(days=30)
    # Set only by continue-as-new, which carries the state into the next run.
    carried_state: CartState | None = None
    carried_event_ids: list[str] = Field(default_factory=list)
    # A marketer's test run: only this rule, waits divided by time_scale.
    test_rule: str | None = None
    time_scale: float = Field(default=1.0, ge=1.0, le=100_000)


class CartResult(BaseModel):
    status: CartStatus
    order_id: str | None = None


class PrepareCartInput(BaseModel):
    cart_id: str
    placed_since: datetime
    test_rule: str | None = None


class PrepareCartResult(BaseModel):
    # An order placed for this cart since its first event here: the cart is done.
    order_id: str | None = None
    occurred_at: datetime | None = None
    # The shortest idle time an active cart.abandoned rule counts as abandonment.
    abandon_after: timedelta | None = None


def template_cart(cart_id: str, snapshot: CartSnapshot | None) -> dict[str, object]:
    """The cart as templates and conditions see it (templates/README.md)."""
    items = snapshot.items if snapshot else []
    return {
        "id": cart_id,
        "currency": snapshot.currency if snapshot else "",
        "total": str(snapshot.total) if snapshot else "0",
        "item_count": sum(i.quantity for i in items),
        "line_count": len(items),
        "first_item_name": items[0].name if items else "",
        "checkout_url": snapshot.checkout_url if snapshot else None,
        "checkout_started": False,
        "items": template_lines(items),
    }


def template_lines(items: Iterable[CartItem | OrderLine]) -> list[dict[str, object]]:
    """Cart or order lines as templates see them (templates/README.md)."""
    return [
        {
            "sku": i.sku,
            "name": i.name,
            "quantity": i.quantity,
            "unit_price": str(i.unit_price),
            "line_total": str(i.unit_price * i.quantity),
            "category": i.category,
            "url": i.url,
            "image_url": getattr(i, "image_url", None),
        }
        for i in items
    ]
