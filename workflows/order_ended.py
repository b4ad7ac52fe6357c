"""An order that has ended (delivered, cancelled or returned), and the run reopened for one
that had: ops asking for a move get a clear refusal, and the events an ended order still
acts on (``AFTER_END``) are applied: a payment after a cancellation is refunded, a parcel
scanned delivered can still come back, a refund the shop made is recorded.

Not a workflow itself: the order workflow hands its inbox over to ``Ended`` once its main
loop is done, and ends when ``run`` returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import workflows.order_words as words
    from contracts import order_money as money
    from contracts import search_attributes as sa
    from contracts.orders import AFTER_END, OrderEvent, OrderState, OrderStatus
    from workflows.order_inbox import Command, Inbox
    from workflows.order_notices import Notices

S = OrderStatus
# Runs that ended before it ignored events arriving after their end; later ones act on
# those an ended order still acts on (AFTER_END): a payment after a cancellation is refunded.
AFTER_END_PATCH = "order-acts-after-end"
# Runs before it dropped an order.rto handled in the same workflow task as the delivery it
# follows (or kept early until then) as stale; later ones return the order.
RTO_BESIDE_DELIVERY_PATCH = "order-rto-beside-delivery"


class Ended:
    def __init__(
        self,
        state: OrderState,
        inbox: Inbox,
        notices: Notices,
        *,
        captured: Callable[[OrderEvent, str], Awaitable[None]],
        refunded: Callable[[OrderEvent, str], None],
        move: Callable[[OrderStatus, str, str | None], None],
        record: Callable[[str, str | None], None],
        publish: Callable[[], None],
        saved: Callable[[], bool] = lambda: True,
    ) -> None:
        self._state = state
        self._inbox = inbox
        self._notices = notices
        self._captured = captured
        self._refunded = refunded
        self._move = move
        self._record = record
        self._publish = publish
        self._saved = saved  # the order's row in the read model is written

    async def run(self) -> None:
        """The order has ended: ops asking for a move get a clear refusal, events it still
        acts on (AFTER_END) are applied, and the run ends once the customer's last messages
        and the order's row are out and nothing is left to handle."""

        def settled() -> bool:
            sent = self._notices.all_out() and self._saved()
            return self._inbox.pending() or (sent and workflow.all_handlers_finished())

        while True:
            for item in self._inbox.take():
                if isinstance(item, Command):
                    item.error, item.done = words.refusal(self._state, S(item.request.to)), True
                elif isinstance(item, OrderEvent):
                    await self._after_end(item)
                    self._publish()
            self._publish()
            await workflow.wait_condition(settled)
            if not self._inbox.pending():
                return

    async def reopen(self) -> None:
        """A run for an order whose workflow had ended, started for an event it still acts
        on: it continues from the ended order's own state (the workflow's ``__init__`` took
        it), and ends again."""
        state = self._state
        state.reopened += 1
        attributes = [sa.ORDER_ID.value_set(state.order_id)]
        if state.customer_id:
            attributes.append(sa.CUSTOMER_ID.value_set(state.customer_id))
        if state.cart_id:
            attributes.append(sa.CART_ID.value_set(state.cart_id))
        workflow.upsert_search_attributes(attributes)
        self._record("sutra", words.reopened(state.status))
        await self.run()

    async def _after_end(self, event: OrderEvent) -> None:
        state = self._state
        by = f"event:{event.event_id}"
        if event.type not in AFTER_END.get(state.status, frozenset()):
            state.ignored_events += 1  # stale or repeated, as in the running order
            return
        if event.type == "payment.captured":
            # After a cancellation the money goes back; after a delivery it is kept.
            await self._captured(event, by)
        elif event.type == "payment.refunded":
            self._refunded(event, by)
        elif event.type == "order.rto":
            await self.returned_after_delivery(event, by)

    async def returned_after_delivery(self, event: OrderEvent, by: str) -> None:
        """A parcel scanned delivered came back: no cash was collected at the door."""
        state = self._state
        if state.total is not None and state.payment_type in ("cod", "partial_cod"):
            balance = money.collected_upfront_only(state, state.total)
            state.paid_amount, state.remaining_amount, state.payment_status = balance
        state.rto_reason = event.reason or "returned after it was scanned delivered"
        self._move(S.rto, by, state.rto_reason)
        await self._notices.tell_shop("order.rto_after_delivery", {"reason": state.rto_reason})
