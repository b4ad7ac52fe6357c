"""Cart workflow (``cart/{cart_id}``): the durable memory of one shopping cart, and the
abandoned-cart journey that runs on it.

It keeps the latest snapshot from ``cart.updated``/``checkout.started``, marks the cart
abandoned once it has been idle for ``idle_after`` with items in it, and then enters the
first active ``cart.abandoned`` rule that admits the customer (pinning its version). The
journey runs while the cart stays idle: activity on the cart pauses it, and once idle
again it resumes at the next unsent step. An order for the cart ends everything and is
credited to the last message the customer received; an emptied cart, an unsubscribe or a
paused rule end the journey.

What an event changes and the status that follows from the facts are ``cart_facts``'
(pure); this module issues the commands, and the journey itself runs on ``JourneyRunner``.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    import workflows.cart_facts as facts
    from contracts import search_attributes as sa
    from contracts.carts import (
        PREPARE_CART,
        CartEvent,
        CartResult,
        CartState,
        CartStatus,
        PrepareCartInput,
        PrepareCartResult,
        StartCartInput,
    )
    from contracts.journeys import (
        ATTRIBUTE_ORDER,
        ENDED_BY_OPS,
        ENTER_JOURNEY,
        EXIT_JOURNEY,
        NOT_CONTROLLABLE,
        AttributeOrderInput,
        AttributeOrderResult,
        EnterJourneyInput,
        EnterJourneyResult,
        ExitJourneyInput,
        JourneyControl,
        JourneyControlResult,
        JourneyState,
        RulePaused,
        apply_control,
        control_refusal,
        control_status,
    )
    from contracts.messages import InboundMessageSignal, MessageStatusUpdate
    from contracts.names import (
        CART_WORKFLOW,
        EVENT_SIGNAL,
        INBOUND_SIGNAL,
        JOURNEY_CONTROL_SIGNAL,
        JOURNEY_CONTROL_UPDATE,
        MESSAGE_STATUS_SIGNAL,
        RULE_PAUSED_SIGNAL,
        STATE_QUERY,
    )
    from contracts.retry_policies import ACTIVITY_RETRY
    from contracts.rules import CART_ABANDONED, RuleDefinition
    from workflows.journey import JourneyRunner
    from workflows.messaging import Messenger

# Event ids remembered across continue-as-new, to keep ignoring re-deliveries.
_CARRIED_EVENT_IDS = 1000
_TIMEOUT = timedelta(seconds=30)
# Journeys entered from then on carry RuleVersion beside RuleId.
RULE_VERSION_PATCH = "journey-rule-version-attribute"
# Ops' pause, resume and end (the journey_control update) publish what they did.
CONTROLS_PATCH = "journey-ops-controls"


@workflow.defn(name=CART_WORKFLOW)
class CartWorkflow:
    @workflow.init
    def __init__(self, input: StartCartInput) -> None:
        self._input = input
        self._state = input.carried_state or CartState(
            cart_id=input.cart_id,
            customer_id=input.customer_id,
            idle_after=input.idle_after / input.time_scale,
            expire_after=input.expire_after,
        )
        self._seen: set[str] = set(input.carried_event_ids)
        self._seen_order: list[str] = list(input.carried_event_ids)
        self._inbox: list[CartEvent] = []
        self._published: str | None = None
        self._messenger = Messenger()
        self._journey_task: asyncio.Task[None] | None = None
        self._rule: RuleDefinition | None = None

    @workflow.signal(name=EVENT_SIGNAL)
    def event(self, event: CartEvent) -> None:
        # Delivery is at-least-once; the event id makes it effectively once.
        if event.event_id in self._seen:
            return
        self._seen.add(event.event_id)
        self._seen_order.append(event.event_id)
        self._inbox.append(event)

    @workflow.signal(name=MESSAGE_STATUS_SIGNAL)
    def message_status(self, update: MessageStatusUpdate) -> None:
        self._messenger.on_status(update)

    @workflow.signal(name=INBOUND_SIGNAL)
    def inbound_message(self, signal: InboundMessageSignal) -> None:
        self._state.last_reply_at = signal.received_at

    @workflow.signal(name=RULE_PAUSED_SIGNAL)
    def rule_paused(self, signal: RulePaused) -> None:
        journey = self._state.journey
        if journey is not None and journey.rule.rule_id == signal.rule_id:
            self._state.rule_paused = True

    @workflow.query(name=STATE_QUERY)
    def state(self) -> CartState:
        return self._state

    @workflow.signal(name=JOURNEY_CONTROL_SIGNAL)
    def control_requested(self, request: JourneyControl) -> None:
        """Ops pause, resume or end this cart's journey (the cart itself goes on)."""
        if apply_control(self._state.journey, self._state.journey_status == "running", request):
            self._publish()

    @workflow.update(name=JOURNEY_CONTROL_UPDATE)
    async def control(self, request: JourneyControl) -> JourneyControlResult:
        """Ops pause, resume or end this cart's journey (the cart itself goes on)."""
        journey = self._state.journey
        assert journey is not None
        if request.action == "end":
            if journey.ended_by is None:
                journey.ended_by = request.by or "ops"
            await workflow.wait_condition(lambda: self._state.journey_status == "ended")
        elif self._state.journey_status == "running":
            journey.paused = request.action == "pause"
            if workflow.patched(CONTROLS_PATCH):
                self._publish()
        return control_status(journey, self._state.journey_status == "running")

    @control.validator
    def _validate_control(self, request: JourneyControl) -> None:
        running = self._state.journey_status == "running"
        refusal = control_refusal(self._state.journey, running, request.action)
        if refusal is not None:
            raise ApplicationError(refusal, type=NOT_CONTROLLABLE)

    @workflow.run
    async def run(self, input: StartCartInput) -> CartResult:
        if input.carried_state is None:
            await workflow.wait_condition(lambda: bool(self._inbox))
            placed_since = min(e.occurred_at for e in self._inbox)
            for event in self._take_inbox():
                facts.apply(self._state, event, workflow.now())
            # Queries answer truthfully while the check below runs.
            facts.derive_status(self._state, workflow.now())
            if await self._prepare(placed_since):
                return await self._finish()
        elif self._state.journey_status == "running":
            self._start_journey()
        while True:
            if self._journey_task is not None and self._journey_task.done():
                self._journey_task.result()  # a journey that crashed fails the task, loudly
                self._journey_task = None
            for event in self._take_inbox():
                facts.apply(self._state, event, workflow.now())
            facts.derive_status(self._state, workflow.now())
            self._publish()
            if self._state.status in (CartStatus.converted, CartStatus.expired):
                return await self._finish()
            if (
                self._state.status is CartStatus.abandoned
                and self._state.journey_status == "none"
                and self._state.entry_checked_for != self._state.last_activity_at
            ):
                await self._enter_journey()
                facts.derive_status(self._state, workflow.now())
            if workflow.info().is_continue_as_new_suggested() and self._journey_task is None:
                workflow.continue_as_new(
                    StartCartInput(
                        cart_id=self._state.cart_id,
                        customer_id=self._state.customer_id,
                        idle_after=self._state.idle_after,
                        expire_after=self._state.expire_after,
                        carried_state=self._state,
                        carried_event_ids=self._seen_order[-_CARRIED_EVENT_IDS:],
                        test_rule=input.test_rule,
                        time_scale=input.time_scale,
                    )
                )
            await self._wait_for_event_or(facts.next_deadline(self._state, workflow.now()))

    async def _prepare(self, placed_since: datetime) -> bool:
        """Learn when rules call this cart abandoned, and whether it is already an order.

        A late event for a cart that already became an order must not revive it. Events
        reach a cart in order, so an order placed for this cart after the first event of
        this run is already in the database by the time this run starts.
        """
        if self._state.status is CartStatus.converted:
            return True
        found = await workflow.execute_activity(
            PREPARE_CART,
            PrepareCartInput(
                cart_id=self._state.cart_id,
                placed_since=placed_since,
                test_rule=self._input.test_rule,
            ),
            summary="Learn when this cart counts as abandoned, and whether it is already an order",
            result_type=PrepareCartResult,
            start_to_close_timeout=_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        if found.abandon_after is not None:
            self._state.idle_after = found.abandon_after / self._input.time_scale
        if found.order_id is None:
            return False
        self._state.status = CartStatus.converted
        self._state.order_id = found.order_id
        self._state.converted_at = found.occurred_at
        return True

    def _take_inbox(self) -> list[CartEvent]:
        events, self._inbox = self._inbox, []
        return events

    async def _wait_for_event_or(self, deadline: datetime) -> None:
        remaining = deadline - workflow.now()
        if remaining <= timedelta(0):
            # A running journey keeps an expired-looking cart alive: wait for it instead.
            await workflow.wait_condition(
                lambda: bool(self._inbox) or self._state.journey_status != "running"
            )
            return
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: bool(self._inbox) or self._journey_just_ended(), timeout=remaining
            )

    def _journey_just_ended(self) -> bool:
        return self._journey_task is not None and self._journey_task.done()

    # --- the journey -------------------------------------------------------------------

    async def _enter_journey(self) -> None:
        state = self._state
        entered = await workflow.execute_activity(
            ENTER_JOURNEY,
            EnterJourneyInput(
                trigger=CART_ABANDONED,
                customer_id=state.customer_id,
                workflow_id=workflow.info().workflow_id,
                cart_id=state.cart_id,
                context=facts.context(state),
                only_rule=self._input.test_rule,
                test=self._input.test_rule is not None,
            ),
            summary=f"Enter the first cart.abandoned rule admitting customer {state.customer_id}",
            result_type=EnterJourneyResult,
            start_to_close_timeout=_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        if entered.rule is None:
            state.entry_checked_for = state.last_activity_at  # no rule admits it, yet
            return
        state.journey = JourneyState(rule=entered.rule, instance=workflow.info().run_id)
        state.journey_status = "running"
        # From now on "idle" means what this rule says: its journey pauses while the
        # customer is active and resumes once they have been idle that long again.
        state.idle_after = self._definition().trigger.idle_after / self._input.time_scale
        attributes: list[SearchAttributeUpdate[Any]] = [sa.RULE_ID.value_set(entered.rule.rule_id)]
        if workflow.patched(RULE_VERSION_PATCH):
            attributes.append(sa.RULE_VERSION.value_set(entered.rule.version))
        workflow.upsert_search_attributes(attributes)
        self._start_journey()

    def _start_journey(self) -> None:
        self._journey_task = asyncio.create_task(self._run_journey())

    async def _run_journey(self) -> None:
        state = self._state
        journey = state.journey
        assert journey is not None
        runner = JourneyRunner(
            journey,
            self._messenger,
            workflow_id=workflow.info().workflow_id,
            customer_id=state.customer_id,
            cart_id=state.cart_id,
            gate=lambda: self._state.status is CartStatus.abandoned,
            stop=self._stop_reason,
            context=lambda: facts.context(self._state),
            time_scale=self._input.time_scale,
            test=self._input.test_rule is not None,
        )
        reason = await runner.run()
        journey.exit_reason = reason
        await workflow.execute_activity(
            EXIT_JOURNEY,
            ExitJourneyInput(
                workflow_id=workflow.info().workflow_id,
                rule_id=journey.rule.rule_id,
                reason=reason,
            ),
            summary=f"Record the journey's exit: {reason}",
            start_to_close_timeout=_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        if reason == "ordered" and state.ordered_elsewhere:
            await self._attribute(state.ordered_elsewhere, cart_id=None)
        state.journey_status = "ended"
        self._publish()

    def _stop_reason(self) -> str | None:
        state = self._state
        journey = state.journey
        if state.status is CartStatus.converted:
            return "converted"
        if journey is not None and journey.ended_by is not None:
            return ENDED_BY_OPS
        if state.rule_paused:
            return "rule_paused"
        if journey is not None:
            exits = self._definition().exit
            if state.status is CartStatus.empty and "cart.emptied" in exits.events:
                return "emptied"
            if (
                state.ordered_elsewhere
                and exits.order_scope == "customer"
                and "order.placed" in exits.events
            ):
                return "ordered"
        if state.status is CartStatus.expired:
            return "expired"
        return None

    def _definition(self) -> RuleDefinition:
        """The pinned rule, parsed once: stop conditions are checked on every wake-up."""
        journey = self._state.journey
        assert journey is not None
        if self._rule is None:
            self._rule = RuleDefinition.model_validate(journey.rule.definition)
        return self._rule

    async def _attribute(self, order_id: str, cart_id: str | None) -> None:
        journey = self._state.journey
        if journey is None or journey.attributed_order == order_id:
            return
        window = self._definition().attribution_window
        await workflow.execute_activity(
            ATTRIBUTE_ORDER,
            AttributeOrderInput(
                order_id=order_id,
                customer_id=self._state.customer_id,
                cart_id=cart_id,
                window=window,
            ),
            summary=f"Credit order {order_id} to the journey's last message",
            result_type=AttributeOrderResult,
            start_to_close_timeout=_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        journey.attributed_order = order_id

    async def _finish(self) -> CartResult:
        if self._journey_task is not None:
            await self._journey_task  # it sees the conversion at once and ends
        state = self._state
        if state.status is CartStatus.converted and state.order_id:
            await self._attribute(state.order_id, cart_id=state.cart_id)
        self._publish()
        return CartResult(status=state.status, order_id=state.order_id)

    def _publish(self) -> None:
        state = self._state
        # Details live in workflow memory and cost no history; search attributes do.
        workflow.set_current_details(facts.describe(state))
        journey = state.journey
        paused = journey is not None and journey.paused and state.journey_status == "running"
        shown = "paused" if paused else state.status.value
        if shown == self._published:
            return
        self._published = shown
        updates = [sa.JOURNEY_STATUS.value_set(shown)]
        if state.order_id:
            updates.append(sa.ORDER_ID.value_set(state.order_id))
        workflow.upsert_search_attributes(updates)
