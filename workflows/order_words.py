"""What an order says and understands: the words a customer's reply is read for, the answer
ops get for a move the order cannot make, the notes its history keeps, what its messages
are told about it, and the summary ops read in the Temporal UI.

Pure functions of what they are given: no commands come from here. The history notes are
part of the order's state, which the API shows: change them knowingly.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from contracts.carts import template_lines
    from contracts.orders import NEXT, OrderState, OrderStatus, PaymentLinkInfo

_YES = frozenset({"YES", "Y", "HAAN", "HAN", "JI", "OK", "CONFIRM", "हाँ", "हां", "جی", "ہاں"})
_NO = frozenset({"NO", "N", "NAHI", "NAHIN", "CANCEL", "नहीं", "نہیں"})


def reply(body: str) -> Literal["yes", "no"] | None:
    """The customer's answer to the COD confirmation, if the message is one."""
    word = body.strip().upper().rstrip(".!")
    if word in _YES:
        return "yes"
    if word in _NO:
        return "no"
    return None


def refusal(state: OrderState, to: OrderStatus) -> str | None:
    """Why ops may not move the order to ``to`` now, or None when they may."""
    if state.placed_at is None:
        return f"order {state.order_id} has not been placed"
    if to not in NEXT[state.status]:
        allowed = ", ".join(sorted(s.value for s in NEXT[state.status])) or "nothing"
        return f"cannot go from {state.status.value} to {to.value} (allowed: {allowed})"
    return None


# --- history notes --------------------------------------------------------------------


def failure(err: ActivityError) -> str:
    """An activity's failure, by its cause when it has one."""
    return str(err.cause or err)


def reopened(status: OrderStatus) -> str:
    return f"reopened: the order had ended {status.value}"


def placed(payment_type: str) -> str:
    return f"placed, {payment_type}"


def upfront_due(amount: Decimal | None) -> str:
    return f"upfront {amount} due"


def confirmation_asked(confirm_by: datetime) -> str:
    return f"asked the customer to confirm by {confirm_by:%Y-%m-%d %H:%M} UTC"


def not_shipped(ship_within: timedelta) -> str:
    return f"not shipped within {ship_within} of confirmation"


def payment_failed(reason: str | None) -> str:
    return f"payment failed: {reason or 'no reason given'}"


def link_failed(err: ActivityError) -> str:
    return f"payment link failed: {failure(err)}; on hold for ops"


def paid_after_end(payment_id: str | None, amount: Decimal, status: OrderStatus) -> str:
    return f"payment {payment_id} of {amount} after {status.value}; kept"


def paid_after_cancellation(payment_id: str | None, amount: Decimal) -> str:
    return f"payment {payment_id} of {amount} after cancellation"


def paid_in_other_currency(payment_id: str | None, currency: str, expected: str | None) -> str:
    return f"payment {payment_id} in {currency}, not {expected}: ignored"


def paid_short(payment_id: str | None, amount: Decimal, due: Decimal) -> str:
    return f"payment {payment_id} of {amount} is less than the {due} due"


def paid_offer(amount: Decimal) -> str:
    return f"paid {amount} online (prepay offer)"


def paid_upfront(amount: Decimal) -> str:
    return f"upfront {amount} paid"


def paid(amount: Decimal) -> str:
    return f"paid {amount}"


def refund_in_other_currency(refund_id: str, currency: str, expected: str | None) -> str:
    return f"refund {refund_id} in {currency}, not {expected}"


def refunded_by_shop(amount: Decimal, refund_id: str) -> str:
    return f"refunded {amount} by the shop ({refund_id})"


def refund_failed(err: ActivityError) -> str:
    return f"refund failed: {failure(err)}"


def refunded(amount: Decimal, refund_id: str) -> str:
    return f"refunded {amount} ({refund_id})"


def told_shop(type: str) -> str:
    return f"told the shop: {type}"


# --- what messages and ops are told -----------------------------------------------------


def order_context(
    state: OrderState, offer: PaymentLinkInfo | None, percent_off: Decimal
) -> dict[str, object]:
    """The order as its message templates see it; ``offer``: the prepay offer still open."""
    offered = None
    if offer is not None:
        offered = {
            "percent_off": int(percent_off),
            "amount": str(offer.amount),
            "payment_link": offer.url,
            "valid_until": offer.expire_at.isoformat(),
        }
    refund = (
        state.paid_amount
        if state.paid_amount > 0 and state.status is OrderStatus.cancelled
        else None
    )
    return {
        "id": state.order_id,
        "currency": state.currency,
        "total": str(state.total),
        "items": template_lines(state.items),
        "payment_type": state.payment_type,
        "payment_status": state.payment_status,
        "upfront_amount": str(state.upfront_amount) if state.upfront_amount is not None else None,
        "remaining_amount": (
            str(state.remaining_amount) if state.remaining_amount is not None else None
        ),
        "payment_link": state.payment_link,
        "pay_by": state.pay_by.isoformat() if state.pay_by else None,
        "tracking_url": state.tracking_url,
        "carrier": state.carrier,
        "shipping_city": state.shipping.get("city"),
        "cancel_reason": state.cancel_reason,
        "refund_amount": str(refund) if refund is not None else None,
        "confirm_by": state.confirm_by.isoformat() if state.confirm_by else None,
        "prepay_offer": offered,
    }


def describe(state: OrderState) -> str:
    """The plain-words summary ops read in the Temporal UI."""
    money = f"{state.currency} {state.total}" if state.total is not None else "-"
    lines = [f"**{state.status.value.replace('_', ' ').capitalize()}**: order of {money}"]
    if state.payment_type:
        pay = f"{state.payment_type.replace('_', ' ')}, payment {state.payment_status}"
        if state.payment_type == "partial_cod" and state.upfront_amount is not None:
            pay += f" (upfront {state.upfront_amount}, on delivery {state.remaining_amount})"
        lines.append(pay)
    if state.status is OrderStatus.awaiting_payment and state.pay_by:
        lines.append(
            f"due by {state.pay_by:%Y-%m-%d %H:%M} UTC; {state.reminders_sent} reminder(s) sent"
        )
    if state.on_hold:
        lines.append("**on hold** for ops")
    if state.sla_breached:
        lines.append("**not shipped in time**")
    if state.cancel_reason:
        lines.append(f"cancelled: {state.cancel_reason}")
    if state.refund:
        lines.append(f"refund {state.refund.amount}: {state.refund.status}")
    return "; ".join(lines) + f".\n\nCustomer `{state.customer_id}`, order `{state.order_id}`."
