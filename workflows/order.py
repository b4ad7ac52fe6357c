"""Order workflow (``order/{order_id}``): one order from placement to a terminal state.

placed → awaiting_payment (prepaid capture / partial-COD upfront) → confirmed → packed →
shipped → out_for_delivery → delivered, or cancelled / rto. The workflow is a small
reactor: events and ops' transitions (signals) and customer replies go through one
inbox and are applied one at a time by the main loop, the only writer of the state; timers
(payment reminders and deadline, COD confirmation deadline, shipping SLA) are computed from
the state after every step. Events arriving ahead of their time (delivered before shipped)
wait until the order catches up; stale and duplicate ones are ignored.

This module is the state machine: the loop, the moves and what each does, the timers. It
hands the rest to helpers it holds: the inbox (``order_inbox``), placement and the money
owed until confirmation (``order_checkout``), the payment providers (``order_payments``),
messages and shop webhooks (``order_notices``), the ended order (``order_ended``) and its
row in the orders read model (``order_read_model``); the words it uses are
``order_words``', the arithmetic ``contracts/order_money.py``'s.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    import workflows.order_words as words
    from contracts import order_money as money
    from contracts import search_attributes as sa
    from contracts.messages import Channel, InboundMessageSignal, MessageStatusUpdate
    from contracts.names import (
        EVENT_SIGNAL,
        INBOUND_SIGNAL,
        MESSAGE_STATUS_SIGNAL,
        ORDER_WORKFLOW,
        STATE_QUERY,
        TRANSITION_OUTCOME_QUERY,
        TRANSITION_SIGNAL,
        TRANSITION_UPDATE,
    )
    from contracts.orders import (
        EVENT_STATUS,
        INVALID_TRANSITION,
        TERMINAL,
        CancelReason,
        HistoryEntry,
        OrderEvent,
        OrderResult,
        OrderState,
        OrderStatus,
        StartOrderInput,
        TransitionOutcome,
        TransitionRequest,
        TransitionSignal,
    )
    from workflows.messaging import Messenger
    from workflows.order_attributes import PaymentAttributes
    from workflows.order_checkout import Checkout
    from workflows.order_ended import AFTER_END_PATCH, RTO_BESIDE_DELIVERY_PATCH, Ended
    from workflows.order_inbox import Command, Inbox, Item, arrival
    from workflows.order_notices import Notices
    from workflows.order_payments import Payments
    from workflows.order_read_model import ReadModel

S = OrderStatus
_TIMEOUT = timedelta(seconds=60)
_UPDATE_CHANNELS: list[Channel] = ["whatsapp", "sms", "email"]


@workflow.defn(name=ORDER_WORKFLOW)
class OrderWorkflow:
    @workflow.init
    def __init__(self, input: StartOrderInput) -> None:
        self._state = input.reopened or OrderState(order_id=input.order_id)
        self._inbox = Inbox()
        self._messenger = Messenger()
        self._published: tuple[str, bool] | None = None
        self._confirmed_at: datetime | None = None
        self._read_model = ReadModel(self._state, timeout=_TIMEOUT)
        self._payment_attributes = PaymentAttributes()
        self._notices = Notices(
            self._state,
            self._messenger,
            record=self._record,
            context=self._order_context,
            timeout=_TIMEOUT,
        )
        self._payments = Payments(
            self._state,
            record=self._record,
            tell_shop=self._notices.tell_shop,
            timeout=_TIMEOUT,
        )
        self._checkout = Checkout(
            self._state,
            self._notices,
            self._payments,
            confirm=self._confirm,
            cancel=self._cancel,
            move=self._move,
            record=self._record,
            publish=self._publish,
            timeout=_TIMEOUT,
        )
        self._ended = Ended(
            self._state,
            self._inbox,
            self._notices,
            captured=self._checkout.captured,
            refunded=self._payments.reported_refund,
            move=self._move,
            record=self._record,
            publish=self._publish,
            saved=self._read_model.idle,
        )

    # --- inputs ---------------------------------------------------------------------------

    @workflow.signal(name=EVENT_SIGNAL)
    def event(self, event: OrderEvent) -> None:
        self._inbox.event(event)

    @workflow.signal(name=MESSAGE_STATUS_SIGNAL)
    def message_status(self, update: MessageStatusUpdate) -> None:
        self._messenger.on_status(update)

    @workflow.signal(name=INBOUND_SIGNAL)
    def inbound_message(self, signal: InboundMessageSignal) -> None:
        self._inbox.reply(signal)

    @workflow.signal(name=TRANSITION_SIGNAL)
    def transition_requested(self, signal: TransitionSignal) -> None:
        self._inbox.move(signal)

    @workflow.query(name=TRANSITION_OUTCOME_QUERY)
    def transition_outcome(self, request_id: str) -> TransitionOutcome:
        return self._inbox.outcome(request_id, self._state)

    @workflow.update(name=TRANSITION_UPDATE)
    async def transition(self, request: TransitionRequest) -> OrderState:
        command = self._inbox.command(request)
        await workflow.wait_condition(lambda: command.done)
        if command.error is not None:
            raise ApplicationError(command.error, self._state.status.value, type=INVALID_TRANSITION)
        return self._state

    @transition.validator
    def _validate_transition(self, request: TransitionRequest) -> None:
        error = self._refusal(S(request.to))
        if error is not None:
            raise ApplicationError(error, self._state.status.value, type=INVALID_TRANSITION)

    @workflow.query(name=STATE_QUERY)
    def state(self) -> OrderState:
        return self._state

    # --- the loop -------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: StartOrderInput) -> OrderResult:
        if input.reopened is not None:
            await self._ended.reopen()
            return self._result()
        placed = await self._inbox.placement()
        if placed is None:
            return self._result()
        await self._checkout.place(placed)
        while self._state.status not in TERMINAL:
            for item in self._inbox.take():
                # Every item is handled, even once terminal: a payment racing a cancellation
                # must still be refunded and every ops request answered.
                await self._handle(item)
                self._publish()
            if self._state.status in TERMINAL:
                break
            deadline = self._next_deadline()
            timeout = None if deadline is None else max(deadline - workflow.now(), timedelta(0))
            try:
                await workflow.wait_condition(self._inbox.pending, timeout=timeout)
            except TimeoutError:
                await self._on_timer()
                self._publish()
        if workflow.patched(AFTER_END_PATCH):
            await self._ended.run()
            return self._result()
        # Ops asking for anything now get a clear refusal from the validator; answer those
        # already queued, then let the customer's last messages finish.
        for item in self._inbox.take():
            if isinstance(item, Command):
                item.error, item.done = self._refusal(S(item.request.to)), True
        await asyncio.gather(*self._notices.tasks)
        self._publish()
        await workflow.wait_condition(self._read_model.idle)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return OrderResult(status=self._state.status, payment_status=self._state.payment_status)

    def _result(self) -> OrderResult:
        state = self._state
        return OrderResult(status=state.status, payment_status=state.payment_status, state=state)

    # --- timers ---------------------------------------------------------------------------

    def _next_deadline(self) -> datetime | None:
        state = self._state
        candidates = self._checkout.deadlines()
        if (
            state.status in (S.confirmed, S.packed)
            and not state.sla_breached
            and self._confirmed_at is not None
        ):
            candidates.append(self._confirmed_at + self._checkout.policy.ship_within)
        return min(candidates) if candidates else None

    async def _on_timer(self) -> None:
        state = self._state
        now = workflow.now()
        if await self._checkout.on_timer(now):
            return
        ship_within = self._checkout.policy.ship_within
        if (
            state.status in (S.confirmed, S.packed)
            and self._confirmed_at is not None
            and now >= self._confirmed_at + ship_within
            and not state.sla_breached
        ):
            state.sla_breached = True
            self._record("sutra", words.not_shipped(ship_within))
            workflow.upsert_search_attributes([sa.SLA_BREACHED.value_set("true")])
            await self._notices.tell_shop(
                "order.sla_breached",
                {"status": state.status.value, "ship_within_seconds": ship_within.total_seconds()},
            )

    # --- transitions ----------------------------------------------------------------------

    def _refusal(self, to: OrderStatus) -> str | None:
        return words.refusal(self._state, to)

    async def _handle(self, item: Item) -> None:
        if isinstance(item, Command):
            request = item.request
            to = S(request.to)
            item.error = self._refusal(to)
            if item.error is None:
                await self._apply(to, f"ops:{request.by}", request.reason, request)
            item.done = True
            await self._replay_early()
            return
        if isinstance(item, InboundMessageSignal):
            await self._checkout.on_reply(item)
            return
        await self._on_event(item)
        await self._replay_early()

    async def _on_event(self, event: OrderEvent) -> None:
        by = f"event:{event.event_id}"
        if event.placed is not None:
            self._state.ignored_events += 1  # placed twice under another id
            return
        if event.type == "payment.captured":
            await self._checkout.captured(event, by)
            return
        if event.type == "payment.refunded":
            self._payments.reported_refund(event, by)
            return
        if event.type == "payment.failed":
            await self._checkout.payment_failed(event, by)
            return
        to = EVENT_STATUS.get(event.type)
        if to is None:
            self._state.ignored_events += 1
            return
        if self._returned_beside_delivery(event):
            await self._ended.returned_after_delivery(event, by)
            return
        position = arrival(self._state.status, to)
        if position == "next":
            await self._apply(to, by, event.reason, event)
        elif position == "stale":
            self._state.ignored_events += 1  # stale or repeated: the order is past it
        else:
            self._inbox.early.append(event)  # ahead of the order: apply once it catches up

    async def _replay_early(self) -> None:
        progressed = True
        while progressed and self._inbox.early:
            progressed = False
            for event in list(self._inbox.early):
                to = EVENT_STATUS[event.type]
                position = arrival(self._state.status, to)
                if position == "next":
                    self._inbox.early.remove(event)
                    await self._apply(to, f"event:{event.event_id}", event.reason, event)
                    progressed = True
                elif self._returned_beside_delivery(event):
                    self._inbox.early.remove(event)
                    await self._ended.returned_after_delivery(event, f"event:{event.event_id}")
                elif position == "stale":
                    self._inbox.early.remove(event)
                    self._state.ignored_events += 1

    def _returned_beside_delivery(self, event: OrderEvent) -> bool:
        """An order.rto reaching the delivered order before its run is over (handled in the
        task of the delivery, or kept early until it): the parcel came back."""
        return (
            self._state.status is S.delivered
            and event.type == "order.rto"
            and workflow.patched(RTO_BESIDE_DELIVERY_PATCH)
        )

    async def _apply(
        self, to: OrderStatus, by: str, note: str | None, source: OrderEvent | TransitionRequest
    ) -> None:
        state = self._state
        if source.tracking_url:
            state.tracking_url = source.tracking_url
        if source.carrier:
            state.carrier = source.carrier
        if to is S.confirmed:
            state.on_hold = False
            self._checkout.awaiting_confirmation = False
            await self._confirm(by, note or "confirmed by ops")
        elif to is S.cancelled:
            await self._cancel("shop", by, note)
        elif to is S.delivered:
            if state.payment_type in ("cod", "partial_cod") and state.total is not None:
                balance = money.collected_on_delivery(state.total, state.discount)
                state.paid_amount, state.remaining_amount, state.payment_status = balance
            self._move(to, by, note or "delivered")
            self._notices.send("order_delivered", _UPDATE_CHANNELS)
        elif to is S.rto:
            state.rto_reason = note or "returned to origin"
            self._move(to, by, state.rto_reason)
        else:
            self._move(to, by, note)
            if to is S.shipped:
                self._notices.send("order_shipped", _UPDATE_CHANNELS)
            elif to is S.out_for_delivery:
                self._notices.send("order_out_for_delivery", _UPDATE_CHANNELS)

    async def _confirm(self, by: str, note: str) -> None:
        self._move(S.confirmed, by, note)
        self._confirmed_at = workflow.now()
        self._state.pay_by = None
        self._notices.send("order_confirmation", _UPDATE_CHANNELS)
        # An unused prepay offer must not be payable once the order is settled as COD.
        if self._payments.offer is not None and self._state.payment_type == "cod":
            await self._payments.cancel_links(("offer",))

    async def _cancel(self, reason: CancelReason, by: str, note: str | None) -> None:
        state = self._state
        self._checkout.awaiting_confirmation = False
        state.cancel_reason = reason
        self._move(S.cancelled, by, note or reason)
        await self._payments.cancel_links(("upfront", "offer", "prepaid"))
        if state.paid_amount > 0 and state.payment_status != "refunded":
            await self._payments.refund(f"order cancelled: {reason}")
        self._notices.send("order_cancelled", _UPDATE_CHANNELS)
        if reason in ("unpaid", "payment_failed", "no_reply"):
            # The shop's backend must release the stock and stop the shipment.
            await self._notices.tell_shop("order.cancelled", {"reason": reason})

    def _move(self, to: OrderStatus, by: str, note: str | None) -> None:
        self._state.status = to
        self._record(by, note)
        self._publish()

    # --- side effects ---------------------------------------------------------------------

    def _order_context(self) -> dict[str, object]:
        checkout = self._checkout
        offer = self._payments.offer if checkout.awaiting_confirmation else None
        return words.order_context(self._state, offer, checkout.policy.cod_prepay_offer_percent)

    def _record(self, by: str, note: str | None) -> None:
        state = self._state
        state.history.append(
            HistoryEntry(
                at=workflow.now(),
                status=state.status,
                payment_status=state.payment_status,
                by=by,
                note=note,
            )
        )

    def _publish(self) -> None:
        state = self._state
        self._read_model.changed()
        workflow.set_current_details(words.describe(state))
        shown = "on_hold" if state.on_hold and state.status not in TERMINAL else state.status.value
        self._payment_attributes.publish(state)
        if self._published == (shown, state.sla_breached):
            return
        self._published = (shown, state.sla_breached)
        workflow.upsert_search_attributes([sa.JOURNEY_STATUS.value_set(shown)])
