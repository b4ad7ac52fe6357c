"""Lifecycle journey (``journey/{rule_id}/{customer_id}[/{key}]``): one customer on one
lifecycle rule — welcome series, post-purchase, replenishment, win-back, birthday,
anniversary, back in stock, price drop.

Started by an accepted event (customer.created, order.delivered, ...), by the hourly
time-trigger sweep or by a product fan-out. It enters its rule through an activity that
pins the rule's current version and applies conditions and re-entry policy, then runs the
rule's steps with the shared step interpreter. The customer's orders reach it as signals:
an order ends it when the rule's exits say so (welcome, win-back), a re-purchase of the
product ends a replenishment reminder, and every order within the attribution window after
the journey's messages is credited to them.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from contracts import search_attributes as sa
    from contracts.journeys import (
        ATTRIBUTE_ORDER,
        ENDED_BY_OPS,
        EXIT_JOURNEY,
        NOT_CONTROLLABLE,
        AttributeOrderInput,
        AttributeOrderResult,
        ExitJourneyInput,
        JourneyControl,
        JourneyControlResult,
        JourneyState,
        RulePaused,
        apply_control,
        control_refusal,
        control_status,
    )
    from contracts.lifecycle import (
        ENTER_LIFECYCLE,
        EnterLifecycleInput,
        EnterLifecycleResult,
        LifecycleEvent,
        LifecycleInput,
        LifecycleState,
    )
    from contracts.messages import MessageStatusUpdate
    from contracts.names import (
        EVENT_SIGNAL,
        JOURNEY_CONTROL_SIGNAL,
        JOURNEY_CONTROL_UPDATE,
        LIFECYCLE_WORKFLOW,
        MESSAGE_STATUS_SIGNAL,
        RULE_PAUSED_SIGNAL,
        STATE_QUERY,
    )
    from contracts.retry_policies import ACTIVITY_RETRY
    from contracts.rules import RuleDefinition
    from workflows.journey import JourneyRunner
    from workflows.messaging import Messenger

_TIMEOUT = timedelta(seconds=30)
# Journeys entered from then on carry RuleVersion beside RuleId.
RULE_VERSION_PATCH = "journey-rule-version-attribute"
# Ops' pause, resume and end (the journey_control update) publish what they did.
CONTROLS_PATCH = "journey-ops-controls"


@workflow.defn(name=LIFECYCLE_WORKFLOW)
class LifecycleJourneyWorkflow:
    @workflow.init
    def __init__(self, input: LifecycleInput) -> None:
        self._input = input
        self._state = LifecycleState(
            rule_id=input.rule_id,
            customer_id=input.customer_id,
            key=input.key,
            trigger=input.trigger,
        )
        self._messenger = Messenger()
        self._seen: set[str] = set()
        self._pending_orders: list[LifecycleEvent] = []
        self._ordered = False
        self._rebought = False
        self._rule_paused = False
        self._definition: RuleDefinition | None = None
        self._exited = False

    @workflow.signal(name=EVENT_SIGNAL)
    def event(self, event: LifecycleEvent) -> None:
        if event.event_id in self._seen:
            return  # delivery is at-least-once
        self._seen.add(event.event_id)
        if event.type == "order.placed" and event.occurred_at > self._input.triggered_at:
            self._ordered = True
            if self._input.sku is not None and self._input.sku in event.skus:
                self._rebought = True
            if event.order_id and event.order_id not in self._state.orders:
                self._state.orders.append(event.order_id)
                self._pending_orders.append(event)

    @workflow.signal(name=MESSAGE_STATUS_SIGNAL)
    def message_status(self, update: MessageStatusUpdate) -> None:
        self._messenger.on_status(update)

    @workflow.signal(name=RULE_PAUSED_SIGNAL)
    def rule_paused(self, signal: RulePaused) -> None:
        if signal.rule_id == self._input.rule_id:
            self._rule_paused = True

    @workflow.query(name=STATE_QUERY)
    def state(self) -> LifecycleState:
        return self._state

    @workflow.signal(name=JOURNEY_CONTROL_SIGNAL)
    def control_requested(self, request: JourneyControl) -> None:
        """Ops pause, resume or end this journey."""
        running = self._state.status == "running" and not self._exited
        if apply_control(self._state.journey, running, request):
            self._publish()

    @workflow.update(name=JOURNEY_CONTROL_UPDATE)
    async def control(self, request: JourneyControl) -> JourneyControlResult:
        """Ops pause, resume or end this journey; an end answers once it is recorded."""
        journey = self._state.journey
        assert journey is not None
        if request.action == "end":
            if journey.ended_by is None:
                journey.ended_by = request.by or "ops"
            await workflow.wait_condition(lambda: self._exited)
        elif self._state.status == "running":
            journey.paused = request.action == "pause"
            if workflow.patched(CONTROLS_PATCH):
                self._publish()
        return control_status(journey, self._state.status == "running" and not self._exited)

    @control.validator
    def _validate_control(self, request: JourneyControl) -> None:
        running = self._state.status == "running" and not self._exited
        refusal = control_refusal(self._state.journey, running, request.action)
        if refusal is not None:
            raise ApplicationError(refusal, type=NOT_CONTROLLABLE)

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleState:
        state = self._state
        entered = await workflow.execute_activity(
            ENTER_LIFECYCLE,
            EnterLifecycleInput(
                rule_id=input.rule_id,
                customer_id=input.customer_id,
                workflow_id=workflow.info().workflow_id,
                run_id=workflow.info().run_id,
                trigger=input.trigger,
                triggered_at=input.triggered_at,
                context=input.context,
                test=input.test,
            ),
            summary=f"Enter rule {input.rule_id} for customer {input.customer_id}",
            result_type=EnterLifecycleResult,
            start_to_close_timeout=_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        if entered.rule is None:
            state.status, state.refused = "not_entered", entered.refused
            self._publish()
            return state
        state.journey = JourneyState(rule=entered.rule, instance=workflow.info().run_id)
        state.status = "running"
        self._definition = RuleDefinition.model_validate(entered.rule.definition)
        self._publish()
        runner = JourneyRunner(
            state.journey,
            self._messenger,
            workflow_id=workflow.info().workflow_id,
            customer_id=input.customer_id,
            cart_id=None,
            gate=lambda: True,
            stop=self._stop_reason,
            context=self._context,
            vet=self._vet,
            time_scale=input.time_scale,
            test=input.test,
        )
        reason = await runner.run()
        state.exit_reason = state.journey.exit_reason = reason
        await workflow.execute_activity(
            EXIT_JOURNEY,
            ExitJourneyInput(
                workflow_id=workflow.info().workflow_id, rule_id=input.rule_id, reason=reason
            ),
            summary=f"Record the journey's exit: {reason}",
            start_to_close_timeout=_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        self._exited = True
        await self._credit_orders(reason)
        state.status = "ended"
        self._publish()
        if reason == ENDED_BY_OPS:  # ops' update answers before the run closes
            await workflow.wait_condition(workflow.all_handlers_finished)
        return state

    def _stop_reason(self) -> str | None:
        journey = self._state.journey
        if journey is not None and journey.ended_by is not None:
            return ENDED_BY_OPS
        if self._rule_paused:
            return "rule_paused"
        if self._rebought:
            return "rebought"
        if self._ordered and "order.placed" in self._rule().exit.events:
            return "ordered"
        return None

    def _vet(self, context: dict[str, object]) -> str | None:
        """Checked on fresh data before every send: an order the signal has not brought
        yet (it was placed while the journey was entering) still ends the journey."""
        customer = context.get("customer")
        last = customer.get("last_order_at") if isinstance(customer, dict) else None
        if (
            last
            and "order.placed" in self._rule().exit.events
            and datetime.fromisoformat(str(last)) > self._input.triggered_at
        ):
            return "ordered"
        return None

    def _rule(self) -> RuleDefinition:
        assert self._definition is not None
        return self._definition

    def _context(self) -> dict[str, object]:
        data = dict(self._input.context)
        return {**data, "event": {"type": self._input.trigger, "data": data}}

    async def _credit_orders(self, reason: str) -> None:
        """Credit orders to the journey's messages: those that came while it ran, and any
        within the attribution window after it ended (a rule paused ends it at once)."""
        # Ended by a paused rule or by ops: it ends at once, crediting what came so far.
        ended_now = reason in ("rule_paused", ENDED_BY_OPS)
        if not ended_now and not self._ordered and not self._input.test:
            window = self._rule().attribution_window / self._input.time_scale
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: bool(self._pending_orders), timeout=window)
        while self._pending_orders:
            order = self._pending_orders.pop(0)
            assert order.order_id is not None
            await workflow.execute_activity(
                ATTRIBUTE_ORDER,
                AttributeOrderInput(
                    order_id=order.order_id,
                    customer_id=self._input.customer_id,
                    cart_id=None,
                    window=self._rule().attribution_window,
                ),
                summary=f"Credit order {order.order_id} to the journey's last message",
                result_type=AttributeOrderResult,
                start_to_close_timeout=_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            )
            journey = self._state.journey
            if journey is not None:
                journey.attributed_order = order.order_id

    def _publish(self) -> None:
        state = self._state
        sent = len(state.journey.sent) if state.journey else 0
        paused = state.journey is not None and state.journey.paused and state.status == "running"
        shown = "paused" if paused else state.status
        details = f"**{state.trigger}** journey of customer `{state.customer_id}`: {shown}"
        if state.refused:
            details += f" (not entered: {state.refused})"
        if state.journey is not None:
            rule = state.journey.rule
            details += f"; rule `{rule.rule_id}` v{rule.version}, {sent} message(s) sent"
            if rule.holdout:
                details += " (held out: in the rule's holdout group, no message is sent)"
        if paused:
            details += "; **paused by ops**: nothing goes out until resumed"
        if state.exit_reason:
            details += f"; ended: {state.exit_reason}"
        workflow.set_current_details(details + ".")
        attributes: list[SearchAttributeUpdate[Any]] = [sa.JOURNEY_STATUS.value_set(shown)]
        if state.journey is not None and workflow.patched(RULE_VERSION_PATCH):
            attributes.append(sa.RULE_VERSION.value_set(state.journey.rule.version))
        workflow.upsert_search_attributes(attributes)
