"""An order from its placement until it is confirmed or given up: what the payment policy
asks upfront, the link to pay by with its reminders and deadline, payments captured, and
the cash-on-delivery confirmation asked of the customer (and its prepay offer).

Not a workflow itself: the order workflow holds a ``Checkout``, hands it placement, the
payment events, the customer's replies and its timers, and gives it the order's own moves
(``confirm``, ``cancel``, ``move``), which stay the workflow's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import workflows.order_words as words
    from contracts import search_attributes as sa
    from contracts.messages import Channel, InboundMessageSignal
    from contracts.orders import (
        PREPARE_ORDER,
        CancelReason,
        OrderEvent,
        OrderState,
        OrderStatus,
        PlacedOrder,
        PrepareOrderInput,
        PrepareOrderResult,
    )
    from contracts.payment_policy import PaymentPolicy
    from contracts.retry_policies import ACTIVITY_RETRY
    from workflows.order_notices import Notices
    from workflows.order_payments import Payments

S = OrderStatus
# Payment links and reminders go where the customer is most likely to see them first.
_PAYMENT_CHANNELS: list[Channel] = ["whatsapp", "sms", "email"]
_PREPARE_TIMEOUT = timedelta(seconds=10)


class Checkout:
    def __init__(
        self,
        state: OrderState,
        notices: Notices,
        payments: Payments,
        *,
        confirm: Callable[[str, str], Awaitable[None]],
        cancel: Callable[[CancelReason, str, str | None], Awaitable[None]],
        move: Callable[[OrderStatus, str, str | None], None],
        record: Callable[[str, str | None], None],
        publish: Callable[[], None],
        timeout: timedelta,
    ) -> None:
        self._state = state
        self._notices = notices
        self._payments = payments
        self._confirm = confirm
        self._cancel = cancel
        self._move = move
        self._record = record
        self._publish = publish
        self._timeout = timeout
        self.policy = PaymentPolicy()
        # Asked the customer to confirm a COD order by replying, and no answer yet.
        self.awaiting_confirmation = False

    # --- placement ------------------------------------------------------------------------

    async def place(self, placed: PlacedOrder) -> None:
        state = self._state
        state.customer_id = placed.customer_id
        state.cart_id = placed.cart_id
        state.payment_type = placed.payment_type
        state.payment_status = placed.payment_status
        state.currency = placed.currency
        state.total = placed.total
        state.items = placed.items
        state.shipping = placed.shipping
        state.placed_at = placed.placed_at
        self._record("sutra", words.placed(placed.payment_type))
        attributes = [
            sa.ORDER_ID.value_set(state.order_id),
            sa.CUSTOMER_ID.value_set(placed.customer_id),
        ]
        if placed.cart_id:
            attributes.append(sa.CART_ID.value_set(placed.cart_id))
        workflow.upsert_search_attributes(attributes)
        prepared = await workflow.execute_activity(
            PREPARE_ORDER,
            PrepareOrderInput(placed=placed),
            result_type=PrepareOrderResult,
            # A computation of milliseconds: a worker killed under it costs the order (and
            # ops' moves, judged after it) this long, not the minute a provider call gets.
            start_to_close_timeout=_PREPARE_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        self.policy = prepared.policy
        state.upfront_amount = prepared.upfront_amount
        state.remaining_amount = prepared.remaining_amount
        self._publish()
        if placed.payment_type == "prepaid":
            if placed.payment_status == "fully_paid":
                state.paid_amount = placed.total
                await self._confirm("sutra", "paid at checkout")
            else:
                self._move(S.awaiting_payment, "sutra", "waiting for the payment")
                state.pay_by = workflow.now() + self.policy.prepaid_within
        elif placed.payment_type == "partial_cod":
            if placed.payment_status in ("partially_paid", "fully_paid"):
                state.paid_amount = (
                    placed.total
                    if placed.payment_status == "fully_paid"
                    else prepared.upfront_amount
                )
                await self._confirm("sutra", "upfront paid at checkout")
            elif prepared.upfront_amount <= 0:
                await self._confirm("sutra", "below the partial-COD minimum: nothing upfront")
            else:
                await self._request_upfront()
        elif self.policy.cod_confirmation:
            await self._ask_cod_confirmation()
        else:
            await self._confirm("sutra", "cash on delivery")

    async def _request_upfront(self) -> None:
        state = self._state
        assert state.placed_at is not None
        assert state.upfront_amount is not None
        state.pay_by = state.placed_at + self.policy.pay_within
        self._move(S.awaiting_payment, "sutra", words.upfront_due(state.upfront_amount))
        link = await self._payments.create_link("upfront", state.upfront_amount, state.pay_by)
        if link is None:
            return
        state.payment_link = link.url
        self._notices.send("cod_payment_request", _PAYMENT_CHANNELS)

    async def _ask_cod_confirmation(self) -> None:
        state = self._state
        policy = self.policy
        state.confirm_by = workflow.now() + policy.cod_confirm_within
        self.awaiting_confirmation = True
        await self._payments.offer_prepay(policy)
        self._record("sutra", words.confirmation_asked(state.confirm_by))
        self._notices.send("order_cod_confirmation", ["whatsapp", "sms", "email"])

    # --- timers ---------------------------------------------------------------------------

    def deadlines(self) -> list[datetime]:
        """When a payment reminder, the payment deadline or the confirmation deadline falls."""
        state = self._state
        candidates: list[datetime] = []
        if state.status is S.awaiting_payment and state.pay_by is not None and not state.on_hold:
            candidates.append(state.pay_by)
            if state.payment_type == "partial_cod" and state.placed_at is not None:
                reminders = self.policy.reminders
                if state.reminders_sent < len(reminders) and state.payment_link:
                    candidates.append(state.placed_at + reminders[state.reminders_sent])
        if self.awaiting_confirmation and not state.on_hold and state.confirm_by is not None:
            candidates.append(state.confirm_by)
        return candidates

    async def on_timer(self, now: datetime) -> bool:
        """Act on the reminder or deadline that is due, if one is; True when one was."""
        state = self._state
        if state.status is S.awaiting_payment and state.pay_by is not None and not state.on_hold:
            if now >= state.pay_by:
                await self._payment_deadline()
                return True
            reminders = self.policy.reminders
            if (
                state.payment_type == "partial_cod"
                and state.placed_at is not None
                and state.reminders_sent < len(reminders)
                and now >= state.placed_at + reminders[state.reminders_sent]
            ):
                state.reminders_sent += 1
                self._notices.send(
                    "cod_payment_reminder",
                    _PAYMENT_CHANNELS,
                    key=f"cod_payment_reminder:{state.reminders_sent}",
                )
                return True
        if self.awaiting_confirmation and state.confirm_by and now >= state.confirm_by:
            self.awaiting_confirmation = False
            if self.policy.cod_no_reply == "cancel":
                await self._cancel("no_reply", "sutra", "no reply to the COD confirmation")
            else:
                state.on_hold = True
                self._record("sutra", "no reply to the COD confirmation: on hold for ops")
                await self._notices.tell_shop("order.on_hold", {"reason": "no_reply"})
            return True
        return False

    async def _payment_deadline(self) -> None:
        state = self._state
        if state.payment_type == "prepaid":
            state.payment_status = "failed"
            await self._cancel("payment_failed", "sutra", "payment not received in time")
            return
        # Cancel the link first: a payment racing the deadline wins if it got there first.
        raced = await self._payments.cancel_upfront()
        if raced is not None:
            link, result = raced
            await self.paid(link.amount, result.payment_id, link.provider, "sutra", "upfront")
            return
        await self._cancel("unpaid", "sutra", "upfront payment not received by the deadline")

    # --- the customer and the providers ---------------------------------------------------

    async def paid(
        self,
        amount: Decimal,
        payment_id: str | None,
        provider: str | None,
        by: str,
        purpose: str | None,
        currency: str | None = None,
    ) -> None:
        note = await self._payments.captured(amount, payment_id, provider, by, purpose, currency)
        if note is not None:
            self.awaiting_confirmation = False  # partial COD never asks: already False
            await self._confirm(by, note)

    async def captured(self, event: OrderEvent, by: str) -> None:
        await self.paid(
            event.amount or Decimal(0),
            event.payment_id,
            event.provider,
            by,
            event.purpose,
            event.currency,
        )

    async def payment_failed(self, event: OrderEvent, by: str) -> None:
        state = self._state
        self._record(by, words.payment_failed(event.reason))
        if state.payment_type == "prepaid" and state.status is S.awaiting_payment:
            state.payment_status = "failed"
            await self._cancel("payment_failed", by, event.reason)

    async def on_reply(self, reply: InboundMessageSignal) -> None:
        state = self._state
        if not (self.awaiting_confirmation or (state.on_hold and state.confirm_by)):
            return
        if state.status is not S.placed:
            return
        word = words.reply(reply.body)
        if word == "yes":
            state.customer_reply = "yes"
            self.awaiting_confirmation = False
            await self._confirm(f"customer:{reply.channel}", "customer confirmed by reply")
        elif word == "no":
            state.customer_reply = "no"
            await self._cancel(
                "customer_declined", f"customer:{reply.channel}", "customer replied NO"
            )
