"""The orders read model's contract: what the order workflow writes to its row in
``orders`` (``services/orders/read_model.py``) after every change, and how those facts
follow from the workflow's ``OrderState``.

Pure, like ``contracts/order_money.py``: the workflow computes the facts (a few hundred
bytes per write, instead of the whole state with its history) and the activity stores them.
Times come from the order's own history, so writing the same state twice writes the same
row; ``version`` (``OrderState.read_model_version``) only grows, and the row is only
updated by a newer one.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel

from contracts.orders import OrderState, OrderStatus, PaymentStatus, PaymentType

SAVE_ORDER = "save_order"

S = OrderStatus
_PAID: frozenset[PaymentStatus] = frozenset({"partially_paid", "fully_paid"})
# Money shown as paid on an entry with these statuses was collected at the door (or, after
# a return, what is left of it), not paid online.
_AT_THE_DOOR = frozenset({S.delivered, S.rto})


class OrderFacts(BaseModel):
    order_id: str
    customer_id: str
    cart_id: str | None = None
    payment_type: PaymentType
    # As the customer chose at checkout: a COD order that took the prepay offer is prepaid
    # now and "cod" here.
    placed_payment_type: PaymentType
    status: OrderStatus
    payment_status: PaymentStatus
    currency: str
    total: Decimal
    discount: Decimal = Decimal(0)
    upfront_amount: Decimal | None = None
    remaining_amount: Decimal | None = None
    paid_amount: Decimal = Decimal(0)
    refunded_amount: Decimal = Decimal(0)
    city: str | None = None
    postal_code: str | None = None
    country: str | None = None
    placed_at: datetime
    confirmed_at: datetime | None = None
    paid_at: datetime | None = None  # first paid online (not cash at the door)
    cancelled_at: datetime | None = None
    delivered_at: datetime | None = None
    rto_at: datetime | None = None
    cancel_reason: str | None = None
    reminders_sent: int = 0
    cod_confirmation_asked: bool = False
    cod_confirmation_answer: Literal["yes", "no"] | None = None
    converted_to_prepaid: bool = False
    on_hold: bool = False
    sla_breached: bool = False


class SaveOrderInput(BaseModel):
    facts: OrderFacts
    version: int
    updated_at: datetime


def _first(state: OrderState, status: OrderStatus) -> datetime | None:
    return next((e.at for e in state.history if e.status is status), None)


def paid_online_at(state: OrderState) -> datetime | None:
    """When the order first showed money paid online, by its history; None when no entry
    shows it (or it was never paid)."""
    for entry in state.history:
        if entry.payment_status in _PAID and entry.status not in _AT_THE_DOOR:
            return entry.at
    return None


def shows_paid_online(state: OrderState) -> bool:
    """The state, as it is now, shows money paid online."""
    return state.payment_status in _PAID and state.status not in _AT_THE_DOOR


def refunded_amount(state: OrderState) -> Decimal:
    back = sum(state.refunds_reported.values(), Decimal(0))
    if state.refund is not None and state.refund.status == "done":
        back += state.refund.amount
    return back


def _answer(reply: str | None) -> Literal["yes", "no"] | None:
    return "yes" if reply == "yes" else "no" if reply == "no" else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def of(state: OrderState, paid_at: datetime | None = None) -> OrderFacts:
    """The facts of a placed order; ``paid_at`` is when the workflow saw a payment that no
    history entry shows (a partial-COD upfront paid after ops had confirmed the order)."""
    assert state.customer_id is not None
    assert state.payment_type is not None
    assert state.currency is not None
    assert state.total is not None
    assert state.placed_at is not None
    converted = state.payment_type == "prepaid" and any(
        link.purpose == "offer" for link in state.links
    )
    return OrderFacts(
        order_id=state.order_id,
        customer_id=state.customer_id,
        cart_id=state.cart_id,
        payment_type=state.payment_type,
        placed_payment_type="cod" if converted else state.payment_type,
        status=state.status,
        payment_status=state.payment_status,
        currency=state.currency,
        total=state.total,
        discount=state.discount,
        upfront_amount=state.upfront_amount,
        remaining_amount=state.remaining_amount,
        paid_amount=state.paid_amount,
        refunded_amount=refunded_amount(state),
        city=_text(state.shipping.get("city")),
        postal_code=_text(state.shipping.get("postal_code")),
        country=_text(state.shipping.get("country")),
        placed_at=state.placed_at,
        confirmed_at=_first(state, S.confirmed),
        paid_at=paid_online_at(state) or paid_at,
        cancelled_at=_first(state, S.cancelled),
        delivered_at=_first(state, S.delivered),
        rto_at=_first(state, S.rto),
        cancel_reason=state.cancel_reason,
        reminders_sent=state.reminders_sent,
        cod_confirmation_asked=state.confirm_by is not None,
        cod_confirmation_answer=_answer(state.customer_reply),
        converted_to_prepaid=converted,
        on_hold=state.on_hold,
        sla_breached=state.sla_breached,
    )
