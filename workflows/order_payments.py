"""An order's money at the payment providers: links to pay by, captured payments booked
against what is due, refunds made exactly once, and refunds the shop reports.

Not a workflow itself: the order workflow holds a ``Payments`` and decides, from what it
answers, where the order goes; the arithmetic is ``contracts/order_money.py``'s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    import workflows.order_words as words
    from contracts import order_money as money
    from contracts.orders import (
        CANCEL_PAYMENT_LINK,
        CREATE_PAYMENT_LINK,
        REFUND_PAYMENT,
        CancelLinkInput,
        CancelLinkResult,
        CreateLinkInput,
        OrderEvent,
        OrderState,
        OrderStatus,
        PaymentLinkInfo,
        RefundInfo,
        RefundInput,
    )
    from contracts.payment_policy import PaymentPolicy
    from contracts.retry_policies import PROVIDER_RETRY
    from workflows.order_ended import AFTER_END_PATCH

S = OrderStatus


class Payments:
    def __init__(
        self,
        state: OrderState,
        *,
        record: Callable[[str, str | None], None],
        tell_shop: Callable[[str, dict[str, object]], Awaitable[None]],
        timeout: timedelta,
    ) -> None:
        self._state = state
        self._record = record
        self._tell_shop = tell_shop
        self._timeout = timeout
        # The discounted prepay link a COD order was offered, if one was made.
        self.offer: PaymentLinkInfo | None = None

    # --- links ----------------------------------------------------------------------------

    async def create_link(
        self, purpose: str, amount: Decimal, expire_at: datetime
    ) -> PaymentLinkInfo | None:
        state = self._state
        assert state.customer_id is not None
        assert state.currency is not None
        try:
            link = await workflow.execute_activity(
                CREATE_PAYMENT_LINK,
                CreateLinkInput(
                    order_id=state.order_id,
                    customer_id=state.customer_id,
                    purpose=purpose,
                    amount=amount,
                    currency=state.currency,
                    expire_at=expire_at,
                ),
                result_type=PaymentLinkInfo,
                start_to_close_timeout=self._timeout,
                schedule_to_close_timeout=timedelta(hours=1),
                retry_policy=PROVIDER_RETRY,
            )
        except ActivityError as err:
            # No link, no way to pay: ops decide (confirm as COD, or cancel).
            state.on_hold = True
            self._record("sutra", words.link_failed(err))
            await self._tell_shop("order.payment_link_failed", {"error": words.failure(err)})
            return None
        state.links.append(link)
        state.payment_provider = link.provider
        return link

    async def offer_prepay(self, policy: PaymentPolicy) -> None:
        """Offer a COD order the whole amount online now, less the policy's discount."""
        state = self._state
        if policy.cod_prepay_offer_percent > 0 and state.total is not None:
            assert state.currency is not None
            offer_amount = money.minus_percent(state.total, policy.cod_prepay_offer_percent)
            self.offer = await self.create_link(
                "offer", offer_amount, workflow.now() + policy.cod_prepay_offer_within
            )
            state.on_hold = False  # a failed offer link does not hold the order

    async def cancel_links(self, purposes: tuple[str, ...]) -> None:
        for link in self._state.links:
            if link.purpose not in purposes or link.status != "created":
                continue
            result = await self.cancel_link(link)
            if result.status == "paid" and result.payment_id != self._state.payment_id:
                # Paid in the instant before cancelling: the money goes back.
                self._state.payment_id = result.payment_id
                self._state.payment_provider = link.provider
                self._state.paid_amount += link.amount

    async def cancel_upfront(self) -> tuple[PaymentLinkInfo, CancelLinkResult] | None:
        """Cancel the open upfront links at the deadline; the first that turns out paid
        meanwhile (and its result) is returned, and the rest are left as they are."""
        for link in self._state.links:
            if link.purpose != "upfront" or link.status != "created":
                continue
            result = await self.cancel_link(link)
            if result.status == "paid":
                return link, result
        return None

    async def cancel_link(self, link: PaymentLinkInfo) -> CancelLinkResult:
        """Cancel one of our links at the provider; it may turn out paid meanwhile."""
        result = await workflow.execute_activity(
            CANCEL_PAYMENT_LINK,
            CancelLinkInput(reference=link.reference),
            result_type=CancelLinkResult,
            start_to_close_timeout=self._timeout,
            schedule_to_close_timeout=timedelta(hours=6),
            retry_policy=PROVIDER_RETRY,
        )
        link.status = result.status
        return result

    # --- payments in ----------------------------------------------------------------------

    async def captured(
        self,
        amount: Decimal,
        payment_id: str | None,
        provider: str | None,
        by: str,
        purpose: str | None,
        currency: str | None = None,
    ) -> str | None:
        """Book a captured payment. Returns the note to confirm the order with when the
        payment settles what it was waiting for; None when the order does not move."""
        state = self._state
        if payment_id is not None and payment_id == state.payment_id:
            return None  # the same payment, told twice (webhook and event)
        if state.status in (S.delivered, S.rto):
            self._record(by, words.paid_after_end(payment_id, amount, state.status))
            return None
        if state.status is S.cancelled:
            # Money arrived for an order that no longer exists: give it back.
            state.payment_id, state.payment_provider = (
                payment_id,
                provider or state.payment_provider,
            )
            state.paid_amount += amount
            self._record(by, words.paid_after_cancellation(payment_id, amount))
            # Only this payment goes back: an earlier one may have been refunded already.
            only = amount if workflow.patched(AFTER_END_PATCH) else None
            await self.refund("payment after cancellation", only)
            return None
        if currency is not None and currency != state.currency:
            self._record(by, words.paid_in_other_currency(payment_id, currency, state.currency))
            return None
        state.payment_id = payment_id
        if provider:
            state.payment_provider = provider
        if purpose == "offer" and self.offer is not None and state.total is not None:
            # Paid the discounted whole: the order becomes prepaid.
            state.discount, balance = money.offer_taken(state.total, amount)
            state.payment_type = "prepaid"
            state.paid_amount = balance.paid
            state.upfront_amount, state.remaining_amount = balance.paid, balance.remaining
            state.payment_status = balance.status
            return words.paid_offer(amount)
        if state.payment_type == "partial_cod":
            expected = state.upfront_amount or Decimal(0)
            if amount < expected:
                self._record(by, words.paid_short(payment_id, amount, expected))
                return None
            state.paid_amount += amount
            state.payment_status = "partially_paid"
            for link in state.links:
                if link.purpose == "upfront":
                    link.status = "paid"
            if state.status is S.awaiting_payment or state.on_hold:
                state.on_hold = False
                return words.paid_upfront(amount)
            return None
        due = money.due(state)
        if amount < due:
            self._record(by, words.paid_short(payment_id, amount, due))
            return None
        state.paid_amount += amount
        state.payment_status = "fully_paid"
        if state.status in (S.placed, S.awaiting_payment):
            return words.paid(amount)
        return None

    # --- money out ------------------------------------------------------------------------

    def reported_refund(self, event: OrderEvent, by: str) -> None:
        """A refund the shop (or its provider) made and told us of: recorded, once."""
        state = self._state
        refund_id = event.refund_id or event.event_id
        ours = state.refund is not None and state.refund.provider_refund_id == refund_id
        if ours or refund_id in state.refunds_reported:
            return  # our own refund, or the same one told twice
        if event.currency is not None and event.currency != state.currency:
            self._record(
                by, words.refund_in_other_currency(refund_id, event.currency, state.currency)
            )
            return
        amount = event.amount or Decimal(0)
        state.refunds_reported[refund_id] = amount
        if money.refunded_in_full(state):
            state.payment_status = "refunded"
        self._record(by, words.refunded_by_shop(amount, refund_id))

    async def refund(self, reason: str, amount: Decimal | None = None) -> None:
        """Compensation: give back what was paid (``amount``: one payment of it), exactly
        once per payment (the key is the payment)."""
        state = self._state
        key = f"{state.order_id}:refund:{state.payment_id}"
        done = state.refund is not None and state.refund.status == "done"
        if done and (amount is None or state.refund is None or state.refund.key == key):
            return
        due = state.paid_amount if amount is None else amount
        if not state.payment_id or not state.payment_provider or state.currency is None:
            self._record("sutra", "a refund is due but the payment is unknown: told the shop")
            await self._tell_shop("order.refund_required", {"amount": str(due)})
            return
        state.refund = RefundInfo(key=key, amount=due)
        try:
            refund_id = await workflow.execute_activity(
                REFUND_PAYMENT,
                RefundInput(
                    key=key,
                    order_id=state.order_id,
                    payment_id=state.payment_id,
                    provider=state.payment_provider,
                    amount=due,
                    currency=state.currency,
                    reason=reason,
                ),
                result_type=str,
                start_to_close_timeout=self._timeout,
                schedule_to_close_timeout=timedelta(days=3),
                retry_policy=PROVIDER_RETRY,
            )
        except ActivityError as err:
            state.refund.status = "failed"
            self._record("sutra", words.refund_failed(err))
            await self._tell_shop("order.refund_failed", {"error": words.failure(err)})
            return
        state.refund.provider_refund_id = refund_id
        state.refund.status = "done"
        state.payment_status = "refunded"
        self._record("sutra", words.refunded(due, refund_id))
