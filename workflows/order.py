"""Order workflow (``order/{order_id}``): one order from placement to a terminal state.

placed → awaiting_payment (prepaid capture / partial-COD upfront) → confirmed → packed →
shipped → out_for_delivery → delivered, or cancelled / rto. The workflow is a small
reactor: events (signals), ops' transitions (updates) and customer replies go through one
inbox and are applied one at a time by the main loop, the only writer of the state; timers
(payment reminders and deadline, COD confirmation deadline, shipping SLA) are computed from
the state after every step. Events arriving ahead of their time (delivered before shipped)
wait until the order catches up; stale and duplicate ones are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from contracts import search_attributes as sa
    from contracts.carts import template_lines
    from contracts.messages import (
        Channel,
        InboundMessageSignal,
        MessageRequest,
        MessageStatusUpdate,
    )
    from contracts.names import (
        EVENT_SIGNAL,
        INBOUND_SIGNAL,
        MESSAGE_STATUS_SIGNAL,
        ORDER_WORKFLOW,
        STATE_QUERY,
        TRANSITION_UPDATE,
    )
    from contracts.orders import (
        AFTER_END,
        CANCEL_PAYMENT_LINK,
        CREATE_PAYMENT_LINK,
        EVENT_STATUS,
        INVALID_TRANSITION,
        NEXT,
        NOTIFY_SHOP,
        PREPARE_ORDER,
        RANK,
        REFUND_PAYMENT,
        TERMINAL,
        CancelLinkInput,
        CancelLinkResult,
        CancelReason,
        CreateLinkInput,
        HistoryEntry,
        OrderEvent,
        OrderResult,
        OrderState,
        OrderStatus,
        PaymentLinkInfo,
        PlacedOrder,
        PrepareOrderInput,
        PrepareOrderResult,
        RefundInfo,
        RefundInput,
        ShopNotice,
        StartOrderInput,
        TransitionRequest,
    )
    from contracts.payment_policy import PaymentPolicy
    from contracts.retry_policies import ACTIVITY_RETRY as _RETRY
    from contracts.retry_policies import PROVIDER_RETRY as _PROVIDER_RETRY
    from contracts.retry_policies import SHOP_RETRY as _SHOP_RETRY
    from workflows.messaging import Messenger

S = OrderStatus
_TIMEOUT = timedelta(seconds=60)
# Payment links and reminders go where the customer is most likely to see them first.
_PAYMENT_CHANNELS: list[Channel] = ["whatsapp", "sms", "email"]
_UPDATE_CHANNELS: list[Channel] = ["whatsapp", "sms", "email"]
_WAIT_FOR_PLACEMENT = timedelta(days=7)
# Runs that ended before it ignored events arriving after their end; later ones act on
# those an ended order still acts on (AFTER_END): a payment after a cancellation is refunded.
AFTER_END_PATCH = "order-acts-after-end"
_YES = frozenset({"YES", "Y", "HAAN", "HAN", "JI", "OK", "CONFIRM", "हाँ", "हां", "جی", "ہاں"})
_NO = frozenset({"NO", "N", "NAHI", "NAHIN", "CANCEL", "नहीं", "نہیں"})


@dataclass
class _Command:
    """An ops transition waiting for the main loop; the update handler awaits its answer."""

    request: TransitionRequest
    done: bool = False
    error: str | None = None


@dataclass
class _Flag:
    done: bool = False

    def set(self) -> None:
        self.done = True


@workflow.defn(name=ORDER_WORKFLOW)
class OrderWorkflow:
    @workflow.init
    def __init__(self, input: StartOrderInput) -> None:
        self._state = input.reopened or OrderState(order_id=input.order_id)
        self._seen: set[str] = set()
        self._inbox: list[OrderEvent | _Command | InboundMessageSignal] = []
        self._early: list[OrderEvent] = []
        self._messenger = Messenger()
        self._policy = PaymentPolicy()
        self._sends: list[asyncio.Task[None]] = []
        self._published: tuple[str, bool] | None = None
        self._confirmed_at: datetime | None = None
        self._awaiting_confirmation = False
        self._offer: PaymentLinkInfo | None = None
        self._last_dispatch: _Flag | None = None

    # --- inputs ---------------------------------------------------------------------------

    @workflow.signal(name=EVENT_SIGNAL)
    def event(self, event: OrderEvent) -> None:
        if event.event_id in self._seen:  # delivery is at least once
            return
        self._seen.add(event.event_id)
        self._inbox.append(event)

    @workflow.signal(name=MESSAGE_STATUS_SIGNAL)
    def message_status(self, update: MessageStatusUpdate) -> None:
        self._messenger.on_status(update)

    @workflow.signal(name=INBOUND_SIGNAL)
    def inbound_message(self, signal: InboundMessageSignal) -> None:
        key = f"inbound:{signal.inbound_id}"
        if key not in self._seen:
            self._seen.add(key)
            self._inbox.append(signal)

    @workflow.update(name=TRANSITION_UPDATE)
    async def transition(self, request: TransitionRequest) -> OrderState:
        command = _Command(request)
        self._inbox.append(command)
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
            return await self._reopen(input.reopened)
        placed = await self._wait_for_placement()
        if placed is None:
            return self._result()
        await self._place(placed)
        while self._state.status not in TERMINAL:
            for item in self._take():
                # Every item is handled, even once terminal: a payment racing a cancellation
                # must still be refunded and every ops request answered.
                await self._handle(item)
                self._publish()
            if self._state.status in TERMINAL:
                break
            deadline = self._next_deadline()
            timeout = None if deadline is None else max(deadline - workflow.now(), timedelta(0))
            try:
                await workflow.wait_condition(lambda: bool(self._inbox), timeout=timeout)
            except TimeoutError:
                await self._on_timer()
                self._publish()
        if workflow.patched(AFTER_END_PATCH):
            await self._ended()
            return self._result()
        # Ops asking for anything now get a clear refusal from the validator; answer those
        # already queued, then let the customer's last messages finish.
        for item in self._take():
            if isinstance(item, _Command):
                item.error, item.done = self._refusal(S(item.request.to)), True
        await asyncio.gather(*self._sends)
        self._publish()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return OrderResult(status=self._state.status, payment_status=self._state.payment_status)

    def _result(self) -> OrderResult:
        state = self._state
        return OrderResult(status=state.status, payment_status=state.payment_status, state=state)

    # --- after the end --------------------------------------------------------------------

    async def _ended(self) -> None:
        """The order has ended: ops asking for a move get a clear refusal, events it still
        acts on (AFTER_END) are applied, and the run ends once the customer's last messages
        are out and nothing is left to handle."""

        def settled() -> bool:
            sent = all(task.done() for task in self._sends)
            return bool(self._inbox) or (sent and workflow.all_handlers_finished())

        while True:
            for item in self._take():
                if isinstance(item, _Command):
                    item.error, item.done = self._refusal(S(item.request.to)), True
                elif isinstance(item, OrderEvent):
                    await self._after_end(item)
                    self._publish()
            self._publish()
            await workflow.wait_condition(settled)
            if not self._inbox:
                return

    async def _reopen(self, ended: OrderState) -> OrderResult:
        """A run for an order whose workflow had ended, started for an event it still acts
        on: it continues from the ended order's own state (``__init__`` took it), and ends
        again."""
        state = self._state
        state.reopened += 1
        attributes = [sa.ORDER_ID.value_set(state.order_id)]
        if state.customer_id:
            attributes.append(sa.CUSTOMER_ID.value_set(state.customer_id))
        if state.cart_id:
            attributes.append(sa.CART_ID.value_set(state.cart_id))
        workflow.upsert_search_attributes(attributes)
        self._record("sutra", f"reopened: the order had ended {state.status.value}")
        await self._ended()
        return self._result()

    async def _after_end(self, event: OrderEvent) -> None:
        state = self._state
        by = f"event:{event.event_id}"
        if event.type not in AFTER_END.get(state.status, frozenset()):
            state.ignored_events += 1  # stale or repeated, as in the running order
            return
        if event.type == "payment.captured":
            # After a cancellation the money goes back; after a delivery it is kept.
            await self._paid(
                event.amount or Decimal(0),
                event.payment_id,
                event.provider,
                by,
                event.purpose,
                event.currency,
            )
        elif event.type == "payment.refunded":
            self._refunded(event, by)
        elif event.type == "order.rto":
            await self._returned_after_delivery(event, by)

    def _refunded(self, event: OrderEvent, by: str) -> None:
        """A refund the shop (or its provider) made and told us of: recorded, once."""
        state = self._state
        refund_id = event.refund_id or event.event_id
        ours = state.refund is not None and state.refund.provider_refund_id == refund_id
        if ours or refund_id in state.refunds_reported:
            return  # our own refund, or the same one told twice
        if event.currency is not None and event.currency != state.currency:
            self._record(by, f"refund {refund_id} in {event.currency}, not {state.currency}")
            return
        amount = event.amount or Decimal(0)
        state.refunds_reported[refund_id] = amount
        back = sum(state.refunds_reported.values(), Decimal(0))
        if state.refund is not None and state.refund.status == "done":
            back += state.refund.amount
        if state.paid_amount > 0 and back >= state.paid_amount:
            state.payment_status = "refunded"
        self._record(by, f"refunded {amount} by the shop ({refund_id})")

    async def _returned_after_delivery(self, event: OrderEvent, by: str) -> None:
        """A parcel scanned delivered came back: no cash was collected at the door."""
        state = self._state
        if state.total is not None and state.payment_type in ("cod", "partial_cod"):
            upfront = state.upfront_amount if state.payment_type == "partial_cod" else None
            state.paid_amount = upfront or Decimal(0).quantize(state.total)
            state.remaining_amount = state.total - state.discount - state.paid_amount
            state.payment_status = "partially_paid" if upfront else "pending"
        state.rto_reason = event.reason or "returned after it was scanned delivered"
        self._move(S.rto, by, state.rto_reason)
        await self._tell_shop("order.rto_after_delivery", {"reason": state.rto_reason})

    def _take(self) -> list[OrderEvent | _Command | InboundMessageSignal]:
        items, self._inbox = self._inbox, []
        return items

    async def _wait_for_placement(self) -> PlacedOrder | None:
        """Events may overtake ``order.placed`` (a webhook racing the backend): keep them."""

        def placed() -> bool:
            return any(isinstance(i, OrderEvent) and i.placed for i in self._inbox)

        try:
            await workflow.wait_condition(placed, timeout=_WAIT_FOR_PLACEMENT)
        except TimeoutError:
            return None
        for item in list(self._inbox):
            if isinstance(item, OrderEvent) and item.placed is not None:
                self._inbox.remove(item)
                return item.placed
        return None

    # --- placement and payment ------------------------------------------------------------

    async def _place(self, placed: PlacedOrder) -> None:
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
        self._record("sutra", f"placed, {placed.payment_type}")
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
            start_to_close_timeout=_TIMEOUT,
            retry_policy=_RETRY,
        )
        self._policy = prepared.policy
        state.upfront_amount = prepared.upfront_amount
        state.remaining_amount = prepared.remaining_amount
        self._publish()
        if placed.payment_type == "prepaid":
            if placed.payment_status == "fully_paid":
                state.paid_amount = placed.total
                await self._confirm("sutra", "paid at checkout")
            else:
                self._move(S.awaiting_payment, "sutra", "waiting for the payment")
                state.pay_by = workflow.now() + self._policy.prepaid_within
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
        elif self._policy.cod_confirmation:
            await self._ask_cod_confirmation()
        else:
            await self._confirm("sutra", "cash on delivery")

    async def _request_upfront(self) -> None:
        state = self._state
        assert state.placed_at is not None
        assert state.upfront_amount is not None
        state.pay_by = state.placed_at + self._policy.pay_within
        self._move(S.awaiting_payment, "sutra", f"upfront {state.upfront_amount} due")
        link = await self._create_link("upfront", state.upfront_amount, state.pay_by)
        if link is None:
            return
        state.payment_link = link.url
        self._send("cod_payment_request", _PAYMENT_CHANNELS)

    async def _create_link(
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
                start_to_close_timeout=_TIMEOUT,
                schedule_to_close_timeout=timedelta(hours=1),
                retry_policy=_PROVIDER_RETRY,
            )
        except ActivityError as err:
            # No link, no way to pay: ops decide (confirm as COD, or cancel).
            state.on_hold = True
            self._record("sutra", f"payment link failed: {err.cause or err}; on hold for ops")
            await self._tell_shop("order.payment_link_failed", {"error": str(err.cause or err)})
            return None
        state.links.append(link)
        state.payment_provider = link.provider
        return link

    async def _ask_cod_confirmation(self) -> None:
        state = self._state
        policy = self._policy
        state.confirm_by = workflow.now() + policy.cod_confirm_within
        self._awaiting_confirmation = True
        if policy.cod_prepay_offer_percent > 0 and state.total is not None:
            assert state.currency is not None
            offer_amount = _minus_percent(state.total, policy.cod_prepay_offer_percent)
            self._offer = await self._create_link(
                "offer", offer_amount, workflow.now() + policy.cod_prepay_offer_within
            )
            state.on_hold = False  # a failed offer link does not hold the order
        self._record(
            "sutra", f"asked the customer to confirm by {state.confirm_by:%Y-%m-%d %H:%M} UTC"
        )
        self._send("order_cod_confirmation", ["whatsapp", "sms", "email"])

    def _next_deadline(self) -> datetime | None:
        state = self._state
        candidates: list[datetime] = []
        if state.status is S.awaiting_payment and state.pay_by is not None and not state.on_hold:
            candidates.append(state.pay_by)
            if state.payment_type == "partial_cod" and state.placed_at is not None:
                reminders = self._policy.reminders
                if state.reminders_sent < len(reminders) and state.payment_link:
                    candidates.append(state.placed_at + reminders[state.reminders_sent])
        if self._awaiting_confirmation and not state.on_hold and state.confirm_by is not None:
            candidates.append(state.confirm_by)
        if (
            state.status in (S.confirmed, S.packed)
            and not state.sla_breached
            and self._confirmed_at is not None
        ):
            candidates.append(self._confirmed_at + self._policy.ship_within)
        return min(candidates) if candidates else None

    async def _on_timer(self) -> None:
        state = self._state
        now = workflow.now()
        if state.status is S.awaiting_payment and state.pay_by is not None and not state.on_hold:
            if now >= state.pay_by:
                await self._payment_deadline()
                return
            reminders = self._policy.reminders
            if (
                state.payment_type == "partial_cod"
                and state.placed_at is not None
                and state.reminders_sent < len(reminders)
                and now >= state.placed_at + reminders[state.reminders_sent]
            ):
                state.reminders_sent += 1
                self._send(
                    "cod_payment_reminder",
                    _PAYMENT_CHANNELS,
                    key=f"cod_payment_reminder:{state.reminders_sent}",
                )
                return
        if self._awaiting_confirmation and state.confirm_by and now >= state.confirm_by:
            self._awaiting_confirmation = False
            if self._policy.cod_no_reply == "cancel":
                await self._cancel("no_reply", "sutra", "no reply to the COD confirmation")
            else:
                state.on_hold = True
                self._record("sutra", "no reply to the COD confirmation: on hold for ops")
                await self._tell_shop("order.on_hold", {"reason": "no_reply"})
            return
        if (
            state.status in (S.confirmed, S.packed)
            and self._confirmed_at is not None
            and now >= self._confirmed_at + self._policy.ship_within
            and not state.sla_breached
        ):
            state.sla_breached = True
            self._record("sutra", f"not shipped within {self._policy.ship_within} of confirmation")
            workflow.upsert_search_attributes([sa.SLA_BREACHED.value_set("true")])
            await self._tell_shop(
                "order.sla_breached",
                {
                    "status": state.status.value,
                    "ship_within_seconds": self._policy.ship_within.total_seconds(),
                },
            )

    async def _payment_deadline(self) -> None:
        state = self._state
        if state.payment_type == "prepaid":
            state.payment_status = "failed"
            await self._cancel("payment_failed", "sutra", "payment not received in time")
            return
        # Cancel the link first: a payment racing the deadline wins if it got there first.
        for link in state.links:
            if link.purpose != "upfront" or link.status != "created":
                continue
            result = await self._cancel_link(link)
            if result.status == "paid":
                await self._paid(link.amount, result.payment_id, link.provider, "sutra", "upfront")
                return
        await self._cancel("unpaid", "sutra", "upfront payment not received by the deadline")

    async def _paid(
        self,
        amount: Decimal,
        payment_id: str | None,
        provider: str | None,
        by: str,
        purpose: str | None,
        currency: str | None = None,
    ) -> None:
        state = self._state
        if payment_id is not None and payment_id == state.payment_id:
            return  # the same payment, told twice (webhook and event)
        if state.status in (S.delivered, S.rto):
            self._record(by, f"payment {payment_id} of {amount} after {state.status.value}; kept")
            return
        if state.status is S.cancelled:
            # Money arrived for an order that no longer exists: give it back.
            state.payment_id, state.payment_provider = (
                payment_id,
                provider or state.payment_provider,
            )
            state.paid_amount += amount
            self._record(by, f"payment {payment_id} of {amount} after cancellation")
            # Only this payment goes back: an earlier one may have been refunded already.
            only = amount if workflow.patched(AFTER_END_PATCH) else None
            await self._refund("payment after cancellation", only)
            return
        if currency is not None and currency != state.currency:
            self._record(by, f"payment {payment_id} in {currency}, not {state.currency}: ignored")
            return
        state.payment_id = payment_id
        if provider:
            state.payment_provider = provider
        if purpose == "offer" and self._offer is not None and state.total is not None:
            # Paid the discounted whole: the order becomes prepaid.
            state.discount = state.total - amount
            state.payment_type = "prepaid"
            state.paid_amount = amount
            state.upfront_amount, state.remaining_amount = amount, Decimal(0).quantize(amount)
            state.payment_status = "fully_paid"
            self._awaiting_confirmation = False
            await self._confirm(by, f"paid {amount} online (prepay offer)")
            return
        if state.payment_type == "partial_cod":
            expected = state.upfront_amount or Decimal(0)
            if amount < expected:
                self._record(
                    by, f"payment {payment_id} of {amount} is less than the {expected} due"
                )
                return
            state.paid_amount += amount
            state.payment_status = "partially_paid"
            for link in state.links:
                if link.purpose == "upfront":
                    link.status = "paid"
            if state.status is S.awaiting_payment or state.on_hold:
                state.on_hold = False
                await self._confirm(by, f"upfront {amount} paid")
            return
        due = (state.total or Decimal(0)) - state.discount - state.paid_amount
        if amount < due:
            self._record(by, f"payment {payment_id} of {amount} is less than the {due} due")
            return
        state.paid_amount += amount
        state.payment_status = "fully_paid"
        if state.status in (S.placed, S.awaiting_payment):
            self._awaiting_confirmation = False
            await self._confirm(by, f"paid {amount}")

    # --- transitions ----------------------------------------------------------------------

    def _refusal(self, to: OrderStatus) -> str | None:
        state = self._state
        if state.placed_at is None:
            return f"order {state.order_id} has not been placed"
        if to not in NEXT[state.status]:
            allowed = ", ".join(sorted(s.value for s in NEXT[state.status])) or "nothing"
            return f"cannot go from {state.status.value} to {to.value} (allowed: {allowed})"
        return None

    async def _handle(self, item: OrderEvent | _Command | InboundMessageSignal) -> None:
        if isinstance(item, _Command):
            request = item.request
            to = S(request.to)
            item.error = self._refusal(to)
            if item.error is None:
                await self._apply(to, f"ops:{request.by}", request.reason, request)
            item.done = True
            await self._replay_early()
            return
        if isinstance(item, InboundMessageSignal):
            await self._on_reply(item)
            return
        await self._on_event(item)
        await self._replay_early()

    async def _on_event(self, event: OrderEvent) -> None:
        by = f"event:{event.event_id}"
        if event.placed is not None:
            self._state.ignored_events += 1  # placed twice under another id
            return
        if event.type == "payment.captured":
            await self._paid(
                event.amount or Decimal(0),
                event.payment_id,
                event.provider,
                by,
                event.purpose,
                event.currency,
            )
            return
        if event.type == "payment.refunded":
            self._refunded(event, by)
            return
        if event.type == "payment.failed":
            self._record(by, f"payment failed: {event.reason or 'no reason given'}")
            if self._state.payment_type == "prepaid" and self._state.status is S.awaiting_payment:
                self._state.payment_status = "failed"
                await self._cancel("payment_failed", by, event.reason)
            return
        to = EVENT_STATUS.get(event.type)
        if to is None:
            self._state.ignored_events += 1
            return
        current = self._state.status
        if to in NEXT[current]:
            await self._apply(to, by, event.reason, event)
        elif current in TERMINAL or RANK[to] <= RANK[current]:
            self._state.ignored_events += 1  # stale or repeated: the order is past it
        else:
            self._early.append(event)  # ahead of the order: apply once it catches up

    async def _replay_early(self) -> None:
        progressed = True
        while progressed and self._early:
            progressed = False
            for event in list(self._early):
                to = EVENT_STATUS[event.type]
                current = self._state.status
                if to in NEXT[current]:
                    self._early.remove(event)
                    await self._apply(to, f"event:{event.event_id}", event.reason, event)
                    progressed = True
                elif current in TERMINAL or RANK[to] <= RANK[current]:
                    self._early.remove(event)
                    self._state.ignored_events += 1

    async def _apply(
        self,
        to: OrderStatus,
        by: str,
        note: str | None,
        source: OrderEvent | TransitionRequest,
    ) -> None:
        state = self._state
        if source.tracking_url:
            state.tracking_url = source.tracking_url
        if source.carrier:
            state.carrier = source.carrier
        if to is S.confirmed:
            state.on_hold = False
            self._awaiting_confirmation = False
            await self._confirm(by, note or "confirmed by ops")
        elif to is S.cancelled:
            await self._cancel("shop", by, note)
        elif to is S.delivered:
            if state.payment_type in ("cod", "partial_cod") and state.total is not None:
                state.paid_amount = state.total - state.discount
                state.remaining_amount = Decimal(0).quantize(state.total)
                state.payment_status = "fully_paid"
            self._move(to, by, note or "delivered")
            self._send("order_delivered", _UPDATE_CHANNELS)
        elif to is S.rto:
            state.rto_reason = note or "returned to origin"
            self._move(to, by, state.rto_reason)
        else:
            self._move(to, by, note)
            if to is S.shipped:
                self._send("order_shipped", _UPDATE_CHANNELS)
            elif to is S.out_for_delivery:
                self._send("order_out_for_delivery", _UPDATE_CHANNELS)

    async def _confirm(self, by: str, note: str) -> None:
        self._move(S.confirmed, by, note)
        self._confirmed_at = workflow.now()
        self._state.pay_by = None
        self._send("order_confirmation", _UPDATE_CHANNELS)
        # An unused prepay offer must not be payable once the order is settled as COD.
        if self._offer is not None and self._state.payment_type == "cod":
            await self._cancel_links(("offer",))

    async def _cancel(self, reason: CancelReason, by: str, note: str | None) -> None:
        state = self._state
        self._awaiting_confirmation = False
        state.cancel_reason = reason
        self._move(S.cancelled, by, note or reason)
        await self._cancel_links(("upfront", "offer", "prepaid"))
        if state.paid_amount > 0 and state.payment_status != "refunded":
            await self._refund(f"order cancelled: {reason}")
        self._send("order_cancelled", _UPDATE_CHANNELS)
        if reason in ("unpaid", "payment_failed", "no_reply"):
            # The shop's backend must release the stock and stop the shipment.
            await self._tell_shop("order.cancelled", {"reason": reason})

    async def _cancel_links(self, purposes: tuple[str, ...]) -> None:
        for link in self._state.links:
            if link.purpose not in purposes or link.status != "created":
                continue
            result = await self._cancel_link(link)
            if result.status == "paid" and result.payment_id != self._state.payment_id:
                # Paid in the instant before cancelling: the money goes back.
                self._state.payment_id = result.payment_id
                self._state.payment_provider = link.provider
                self._state.paid_amount += link.amount

    async def _cancel_link(self, link: PaymentLinkInfo) -> CancelLinkResult:
        """Cancel one of our links at the provider; it may turn out paid meanwhile."""
        result = await workflow.execute_activity(
            CANCEL_PAYMENT_LINK,
            CancelLinkInput(reference=link.reference),
            result_type=CancelLinkResult,
            start_to_close_timeout=_TIMEOUT,
            schedule_to_close_timeout=timedelta(hours=6),
            retry_policy=_PROVIDER_RETRY,
        )
        link.status = result.status
        return result

    async def _refund(self, reason: str, amount: Decimal | None = None) -> None:
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
                start_to_close_timeout=_TIMEOUT,
                schedule_to_close_timeout=timedelta(days=3),
                retry_policy=_PROVIDER_RETRY,
            )
        except ActivityError as err:
            state.refund.status = "failed"
            self._record("sutra", f"refund failed: {err.cause or err}")
            await self._tell_shop("order.refund_failed", {"error": str(err.cause or err)})
            return
        state.refund.provider_refund_id = refund_id
        state.refund.status = "done"
        state.payment_status = "refunded"
        self._record("sutra", f"refunded {due} ({refund_id})")

    def _move(self, to: OrderStatus, by: str, note: str | None) -> None:
        self._state.status = to
        self._record(by, note)
        self._publish()

    async def _on_reply(self, reply: InboundMessageSignal) -> None:
        state = self._state
        if not (self._awaiting_confirmation or (state.on_hold and state.confirm_by)):
            return
        if state.status is not S.placed:
            return
        word = reply.body.strip().upper().rstrip(".!")
        if word in _YES:
            state.customer_reply = "yes"
            self._awaiting_confirmation = False
            await self._confirm(f"customer:{reply.channel}", "customer confirmed by reply")
        elif word in _NO:
            state.customer_reply = "no"
            await self._cancel(
                "customer_declined", f"customer:{reply.channel}", "customer replied NO"
            )

    # --- side effects ---------------------------------------------------------------------

    def _send(self, template: str, channels: list[Channel], *, key: str | None = None) -> None:
        state = self._state
        assert state.customer_id is not None
        request = MessageRequest(
            key=f"{workflow.info().workflow_id}/{key or template}",
            customer_id=state.customer_id,
            channels=channels,
            template=template,
            kind="transactional",
            context={"order": self._order_context()},
            quiet_hours=None,
            frequency_cap=timedelta(0),
            workflow_id=workflow.info().workflow_id,
            step=key or template,
            order_id=state.order_id,
        )

        # Each message goes out after the previous one was handed over: "delivered" never
        # overtakes "shipped" when both events arrive at once.
        previous, mine = self._last_dispatch, _Flag()
        self._last_dispatch = mine

        async def send() -> None:
            if previous is not None:
                await workflow.wait_condition(lambda: previous.done)
            try:
                await self._messenger.send(request, dispatched=mine.set)
            finally:
                mine.set()

        self._sends.append(asyncio.create_task(send()))

    def _order_context(self) -> dict[str, object]:
        state = self._state
        offer = None
        if self._offer is not None and self._awaiting_confirmation:
            offer = {
                "percent_off": int(self._policy.cod_prepay_offer_percent),
                "amount": str(self._offer.amount),
                "payment_link": self._offer.url,
                "valid_until": self._offer.expire_at.isoformat(),
            }
        refund = (
            state.paid_amount if state.paid_amount > 0 and state.status is S.cancelled else None
        )
        return {
            "id": state.order_id,
            "currency": state.currency,
            "total": str(state.total),
            "items": template_lines(state.items),
            "payment_type": state.payment_type,
            "payment_status": state.payment_status,
            "upfront_amount": str(state.upfront_amount)
            if state.upfront_amount is not None
            else None,
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
            "prepay_offer": offer,
        }

    async def _tell_shop(self, type: str, data: dict[str, object]) -> None:
        notice = ShopNotice(
            key=f"{workflow.info().workflow_id}/{type}",
            type=type,
            order_id=self._state.order_id,
            data={"status": self._state.status.value, **data},
            at=workflow.now(),
        )
        self._record("sutra", f"told the shop: {type}")

        async def deliver() -> None:
            with contextlib.suppress(ActivityError):  # after a week of trying, ops must look
                await workflow.execute_activity(
                    NOTIFY_SHOP,
                    notice,
                    result_type=str,
                    start_to_close_timeout=_TIMEOUT,
                    schedule_to_close_timeout=timedelta(days=7),
                    retry_policy=_SHOP_RETRY,
                )

        self._sends.append(asyncio.create_task(deliver()))

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
        workflow.set_current_details(describe(state))
        shown = "on_hold" if state.on_hold and state.status not in TERMINAL else state.status.value
        if self._published == (shown, state.sla_breached):
            return
        self._published = (shown, state.sla_breached)
        workflow.upsert_search_attributes([sa.JOURNEY_STATUS.value_set(shown)])


def _minus_percent(total: Decimal, percent: Decimal) -> Decimal:
    exponent = total.as_tuple().exponent
    quantum = Decimal(1).scaleb(exponent if isinstance(exponent, int) else 0)
    return (total * (100 - percent) / 100).quantize(quantum)


def describe(state: OrderState) -> str:
    """The plain-words summary ops read in the Temporal UI."""
    money = f"{state.currency} {state.total}" if state.total is not None else "-"
    lines = [f"**{state.status.value.replace('_', ' ').capitalize()}**: order of {money}"]
    if state.payment_type:
        pay = f"{state.payment_type.replace('_', ' ')}, payment {state.payment_status}"
        if state.payment_type == "partial_cod" and state.upfront_amount is not None:
            pay += f" (upfront {state.upfront_amount}, on delivery {state.remaining_amount})"
        lines.append(pay)
    if state.status is S.awaiting_payment and state.pay_by:
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
