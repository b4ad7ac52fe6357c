"""Contracts of the order workflow (``order/{order_id}``): input, signals, update, query.

The state machine lives here as data so that the API, the workflow and the docs agree on
it: ``NEXT`` says where each status may go. Nothing ever moves backwards.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from contracts.payment_policy import PaymentPolicy

INVALID_TRANSITION = "InvalidTransition"

PREPARE_ORDER = "prepare_order"
CREATE_PAYMENT_LINK = "create_payment_link"
CANCEL_PAYMENT_LINK = "cancel_payment_link"
REFUND_PAYMENT = "refund_payment"
NOTIFY_SHOP = "notify_shop"


class OrderStatus(StrEnum):
    placed = "placed"
    awaiting_payment = "awaiting_payment"
    confirmed = "confirmed"
    packed = "packed"
    shipped = "shipped"
    out_for_delivery = "out_for_delivery"
    delivered = "delivered"
    cancelled = "cancelled"
    rto = "rto"


S = OrderStatus
NEXT: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.placed: frozenset({S.awaiting_payment, S.confirmed, S.cancelled}),
    S.awaiting_payment: frozenset({S.confirmed, S.cancelled}),
    S.confirmed: frozenset({S.packed, S.shipped, S.cancelled}),
    S.packed: frozenset({S.shipped, S.cancelled}),
    S.shipped: frozenset({S.out_for_delivery, S.delivered, S.rto}),
    S.out_for_delivery: frozenset({S.delivered, S.rto}),
    S.delivered: frozenset(),
    S.cancelled: frozenset(),
    S.rto: frozenset(),
}
TERMINAL = frozenset({S.delivered, S.cancelled, S.rto})
# What an order still acts on once it has ended, by how it ended: money that arrives after a
# cancellation goes back, a parcel scanned delivered can still come back (RTO), and a
# refund the shop made is recorded. Anything else is told to the ended order and changes
# nothing (the event shows ``delivered_to_closed``).
AFTER_END: dict[OrderStatus, frozenset[str]] = {
    S.cancelled: frozenset({"payment.captured", "payment.refunded"}),
    S.delivered: frozenset({"order.rto", "payment.captured", "payment.refunded"}),
    S.rto: frozenset({"payment.captured", "payment.refunded"}),
}
# Forward order, to tell an out-of-order event (early: keep it) from a stale one (drop it).
RANK = {
    S.placed: 0,
    S.awaiting_payment: 1,
    S.confirmed: 2,
    S.packed: 3,
    S.shipped: 4,
    S.out_for_delivery: 5,
    S.delivered: 6,
    S.rto: 6,
    S.cancelled: 7,
}
# What ops may ask for; awaiting_payment is the workflow's own business.
OpsTarget = Literal[
    "confirmed", "packed", "shipped", "out_for_delivery", "delivered", "cancelled", "rto"
]
EVENT_STATUS: dict[str, OrderStatus] = {
    "order.packed": S.packed,
    "order.shipped": S.shipped,
    "order.out_for_delivery": S.out_for_delivery,
    "order.delivered": S.delivered,
    "order.cancelled": S.cancelled,
    "order.rto": S.rto,
}

PaymentType = Literal["prepaid", "cod", "partial_cod"]
PaymentStatus = Literal["pending", "partially_paid", "fully_paid", "failed", "refunded"]
CancelReason = Literal["unpaid", "payment_failed", "customer_declined", "no_reply", "shop"]


class OrderLine(BaseModel):
    sku: str
    name: str
    quantity: int
    unit_price: Decimal
    category: str | None = None
    product_id: str | None = None
    url: str | None = None


class PlacedOrder(BaseModel):
    """What ``order.placed`` told us."""

    order_id: str
    customer_id: str
    cart_id: str | None = None
    items: list[OrderLine]
    total: Decimal
    currency: str
    payment_type: PaymentType
    payment_status: PaymentStatus = "pending"
    upfront_amount: Decimal | None = None
    remaining_amount: Decimal | None = None
    shipping: dict[str, Any] = Field(default_factory=dict)
    placed_at: datetime


class OrderEvent(BaseModel):
    """Signal ``event``: one accepted event for this order (delivered at least once)."""

    event_id: str
    type: str
    occurred_at: datetime
    placed: PlacedOrder | None = None  # order.placed
    amount: Decimal | None = None  # payment.*
    currency: str | None = None
    payment_id: str | None = None
    provider: str | None = None
    purpose: str | None = None  # which of our links was paid, when a provider said so
    refund_id: str | None = None  # payment.refunded
    tracking_url: str | None = None
    carrier: str | None = None
    reason: str | None = None


class TransitionRequest(BaseModel):
    """An ops move (``POST /v1/orders/{id}/transitions``), sent in a ``TransitionSignal``
    (the update ``transition`` took it before; the workflow still answers it)."""

    to: OpsTarget
    tracking_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://\S+$")
    carrier: str | None = Field(default=None, max_length=100)
    reason: str | None = Field(default=None, max_length=500)
    by: str = Field(default="ops", max_length=200)


class HistoryEntry(BaseModel):
    at: datetime
    status: OrderStatus
    payment_status: PaymentStatus
    by: str  # "event:<id>", "ops:<key name>", "sutra"
    note: str | None = None


class PaymentLinkInfo(BaseModel):
    purpose: str
    reference: str
    provider: str
    link_id: str
    url: str
    amount: Decimal
    expire_at: datetime
    status: str = "created"


class RefundInfo(BaseModel):
    key: str
    amount: Decimal
    provider_refund_id: str | None = None
    status: str = "requested"


class OrderState(BaseModel):
    order_id: str
    status: OrderStatus = OrderStatus.placed
    customer_id: str | None = None
    cart_id: str | None = None
    payment_type: PaymentType | None = None
    payment_status: PaymentStatus = "pending"
    currency: str | None = None
    total: Decimal | None = None
    discount: Decimal = Decimal(0)
    upfront_amount: Decimal | None = None
    remaining_amount: Decimal | None = None
    paid_amount: Decimal = Decimal(0)
    payment_id: str | None = None
    payment_provider: str | None = None
    payment_link: str | None = None
    pay_by: datetime | None = None
    links: list[PaymentLinkInfo] = Field(default_factory=list)
    reminders_sent: int = 0
    refund: RefundInfo | None = None
    items: list[OrderLine] = Field(default_factory=list)
    shipping: dict[str, Any] = Field(default_factory=dict)
    tracking_url: str | None = None
    carrier: str | None = None
    on_hold: bool = False
    confirm_by: datetime | None = None
    customer_reply: str | None = None
    sla_breached: bool = False
    cancel_reason: CancelReason | None = None
    rto_reason: str | None = None
    placed_at: datetime | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    ignored_events: int = 0
    # Refunds the shop or the provider reported (payment.refunded), by refund id.
    refunds_reported: dict[str, Decimal] = Field(default_factory=dict)
    # Runs before this one: an ended order is reopened for the events it still acts on.
    reopened: int = 0
    # Writes of the order's row in the read model (contracts/order_facts.py), across runs:
    # the row's version, so that a late or repeated write never takes it back.
    read_model_version: int = 0


class TransitionSignal(BaseModel):
    """Signal ``transition_requested``: an ops move, named so its answer can be read back
    (query ``transition_outcome``) and a repeated delivery applies it once."""

    request_id: str = Field(min_length=1, max_length=64)
    request: TransitionRequest


class TransitionOutcome(BaseModel):
    """Query ``transition_outcome``: where an ops move stands. ``done`` once the order's
    main loop judged it; ``error`` says why it was refused; ``state`` is the order now."""

    request_id: str
    known: bool = False  # the workflow has taken the signal
    done: bool = False
    error: str | None = None
    state: OrderState


class StartOrderInput(BaseModel):
    order_id: str
    # The ended order this run continues, for an event it still acts on (AFTER_END).
    reopened: OrderState | None = None


class PrepareOrderInput(BaseModel):
    placed: PlacedOrder


class PrepareOrderResult(BaseModel):
    policy: PaymentPolicy
    upfront_amount: Decimal
    remaining_amount: Decimal


class CreateLinkInput(BaseModel):
    order_id: str
    customer_id: str
    purpose: Literal["upfront", "prepaid", "offer"]
    amount: Decimal
    currency: str
    expire_at: datetime


class CancelLinkInput(BaseModel):
    reference: str


class CancelLinkResult(BaseModel):
    status: str
    payment_id: str | None = None


class RefundInput(BaseModel):
    key: str
    order_id: str
    payment_id: str
    provider: str
    amount: Decimal
    currency: str
    reason: str


class ShopNotice(BaseModel):
    """An outbound webhook to the shop: ``order.cancelled``, ``order.on_hold``,
    ``order.sla_breached``, ``order.payment_link_failed``, ``order.refund_required``,
    ``order.refund_failed``."""

    key: str = Field(description="Stable per notice: the shop dedupes on it")
    type: str
    order_id: str
    data: dict[str, Any] = Field(default_factory=dict)
    at: datetime


class OrderResult(BaseModel):
    status: OrderStatus
    payment_status: PaymentStatus
    # The whole state as the order ended, so that an event for the ended order can be
    # judged (and the order reopened) without a worker; None from runs before it was kept.
    state: OrderState | None = None
