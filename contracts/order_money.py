"""The money on one order: what is due, what a delivery collects or a return gives back,
what a prepay offer costs, and when the order counts as refunded.

Pure and exact, like ``contracts/payment_policy.py``: amounts are ``Decimal`` in major
units, and a zero keeps the exponent of the amount it stands beside (``0.00`` next to an
INR total, ``0`` next to a JPY one), as the order's other amounts do.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from contracts.orders import OrderState, PaymentStatus


class Balance(NamedTuple):
    paid: Decimal
    remaining: Decimal
    status: PaymentStatus


def minus_percent(total: Decimal, percent: Decimal) -> Decimal:
    """``total`` less ``percent``, at the precision of ``total``."""
    exponent = total.as_tuple().exponent
    quantum = Decimal(1).scaleb(exponent if isinstance(exponent, int) else 0)
    return (total * (100 - percent) / 100).quantize(quantum)


def due(state: OrderState) -> Decimal:
    """What a payment must cover to pay the order in full."""
    return (state.total or Decimal(0)) - state.discount - state.paid_amount


def collected_on_delivery(total: Decimal, discount: Decimal) -> Balance:
    """A cash-on-delivery order handed over: the door collected the rest."""
    return Balance(total - discount, Decimal(0).quantize(total), "fully_paid")


def collected_upfront_only(state: OrderState, total: Decimal) -> Balance:
    """A delivered cash-on-delivery order came back: the door collected nothing, so only a
    partial-COD upfront payment was ever made."""
    upfront = state.upfront_amount if state.payment_type == "partial_cod" else None
    paid = upfront or Decimal(0).quantize(total)
    return Balance(paid, total - state.discount - paid, "partially_paid" if upfront else "pending")


def offer_taken(total: Decimal, paid: Decimal) -> tuple[Decimal, Balance]:
    """The prepay offer was paid: the discount it gave, and the order paid in full."""
    return total - paid, Balance(paid, Decimal(0).quantize(paid), "fully_paid")


def refunded_in_full(state: OrderState) -> bool:
    """The refunds the shop reported, and ours once done, give back all that was paid."""
    back = sum(state.refunds_reported.values(), Decimal(0))
    if state.refund is not None and state.refund.status == "done":
        back += state.refund.amount
    return state.paid_amount > 0 and back >= state.paid_amount
