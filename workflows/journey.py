"""The step interpreter every journey runs: a rule version's steps, compiled to a flat
program, executed with durable timers.

Not a workflow: a journey workflow (cart, lifecycle) holds one and gives it two views:

- ``gate()``: whether the journey may move on now (a cart must be idle; activity on it
  pauses the journey, and the interrupted wait starts over once it is idle again);
- ``stop()``: the reason the journey must end, or None. Checked before every step and
  watched during every wait, so an order or an unsubscribe ends a wait at once.

The position (``pc``) is in the journey state, so a pause, a worker restart or a
continue-as-new resumes at the next unsent step and never sends one twice.

A send step moves on as soon as a channel has taken its message; the wait for the
provider's verdict (and, on a bounce, the same step on the next channel) runs beside the
sequence, so the next wait counts from the send as the rule says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, time, timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from contracts.conditions import evaluate
    from contracts.journeys import (
        CUSTOMER_CONTEXT,
        HOLDOUT_PATCH,
        ISSUE_COUPON,
        REVOKE_COUPON,
        SUPERSEDE_COUPONS,
        CustomerContextInput,
        CustomerContextResult,
        IssueCouponInput,
        IssueCouponResult,
        JourneyState,
        RevokeCouponInput,
        SentStep,
    )
    from contracts.messages import MessageOutcome, MessageRequest, QuietHours
    from contracts.retry_policies import ACTIVITY_RETRY
    from contracts.rules import Op, RuleDefinition, Send, compile_steps
    from contracts.time_zones import resolve_zone
    from workflows.journey_split import take_variant
    from workflows.messaging import Messenger, Watch, undelivered

NUMERIC_EQUALITY_PATCH = "numeric-equality"
# Journeys started before it wait out a multi-channel send's fallback inside the step.
FALLBACK_BESIDE_PATCH = "fallback-watch-beside-sequence"
_REACHED = frozenset({"sent", "delivered"})


def until_local(now: datetime, at: time, zone_name: str) -> timedelta:
    """How long until the next ``at`` o'clock in the customer's zone."""
    zone = resolve_zone(zone_name, falls_back_on=(Exception,))
    local = now.astimezone(zone)
    target = datetime.combine(local.date(), at, tzinfo=zone)
    if target <= local:
        target = datetime.combine(local.date() + timedelta(days=1), at, tzinfo=zone)
    return target - local


class JourneyRunner:
    def __init__(
        self,
        state: JourneyState,
        messenger: Messenger,
        *,
        workflow_id: str,
        customer_id: str,
        cart_id: str | None,
        gate: Callable[[], bool],
        stop: Callable[[], str | None],
        context: Callable[[], dict[str, Any]],
        vet: Callable[[dict[str, Any]], str | None] | None = None,
        time_scale: float = 1.0,
        test: bool = False,
    ) -> None:
        self.state = state
        self.messenger = messenger
        self.workflow_id = workflow_id
        self.customer_id = customer_id
        self.cart_id = cart_id
        self.gate = gate
        self.stop = stop
        self.context = context
        self.vet = vet
        self.time_scale = time_scale
        self.test = test
        self.definition = RuleDefinition.model_validate(state.rule.definition)
        self.program = compile_steps(self.definition.steps)
        self._customer: dict[str, Any] = {}
        self._watches: list[asyncio.Task[None]] = []
        self._over = False

    @property
    def key(self) -> str:
        rule = self.state.rule
        return f"{self.workflow_id}/{self.state.instance}/{rule.rule_id}/v{rule.version}"

    async def run(self) -> str:
        """Run to the end of the program or until ``stop()``; return why it ended.

        Fallback watches still open then: a journey that ran out of steps waits for them,
        so a bounce of its last message still reaches the customer on the next channel; a
        journey ended any other way (an order, an exit condition, an unsubscribe, a paused
        rule) ends them at once, and no fallback goes out after an exit."""
        reason = await self._steps()
        if self._watches:
            self._over = reason != "completed"
            await asyncio.gather(*self._watches)
            self._watches.clear()
        return reason

    async def _steps(self) -> str:
        while self.state.pc < len(self.program):
            reason = await self._held()
            if reason:
                return reason
            op = self.program[self.state.pc]
            if op.kind == "wait":
                reason = await self._wait(self._scaled(op.wait))
            elif op.kind == "wait_until":
                reason = await self._wait_until(op)
            elif op.kind == "branch":
                context = await self._fresh_context()
                holds = evaluate(op.condition, context, numeric_equality=self._numeric_eq())
                self.state.pc = self.state.pc + 1 if holds else (op.target or 0)
                continue
            elif op.kind == "split":
                self.state.pc = await take_variant(
                    self.state,
                    op,
                    customer_id=self.customer_id,
                    workflow_id=self.workflow_id,
                    test=self.test,
                )
                continue
            elif op.kind == "jump":
                self.state.pc = op.target or 0
                continue
            else:
                reason = await self._send(op)
            if reason:
                return reason
            self.state.pc += 1
        return "completed"

    def _numeric_eq(self) -> bool:
        # "4500.00" eq "4500" became true in a later release; a journey that decided a
        # branch or exit before keeps deciding it the old way on replay.
        return workflow.patched(NUMERIC_EQUALITY_PATCH)

    def _scaled(self, duration: timedelta | None) -> timedelta:
        assert duration is not None
        return duration / self.time_scale

    async def _held(self) -> str | None:
        """Wait while the journey is paused (the cart is active again, or ops paused it).

        Ops' pause holds the next step without interrupting a wait: the wait keeps its
        clock, and a step that fell due during the pause goes out once resumed."""
        await workflow.wait_condition(
            lambda: (self.gate() and not self.state.paused) or self.stop() is not None
        )
        return self.stop()

    def _on_hold(self) -> bool:
        return self.state.paused

    async def _wait(self, duration: timedelta | Callable[[], timedelta]) -> str | None:
        """Wait ``duration`` from the start of the previous step (recomputed after each
        pause when it is a function)."""
        while True:
            length = duration() if callable(duration) else duration
            start = self.state.clock or workflow.now()
            timeout = start + length - workflow.now()
            if timeout > timedelta(0):
                try:
                    await workflow.wait_condition(
                        lambda: not self.gate() or self.stop() is not None, timeout=timeout
                    )
                except TimeoutError:
                    self.state.clock = start + length
                    return None
            else:
                self.state.clock = workflow.now()
                return None
            if self.stop() is not None:
                return self.stop()
            # Paused mid-wait: once idle again, the interrupted wait starts over from then.
            reason = await self._held()
            if reason:
                return reason
            self.state.clock = workflow.now()

    async def _wait_until(self, op: Op) -> str | None:
        assert op.wait_until is not None
        at = op.wait_until
        if not self._customer:
            await self._fresh_context()
        zone = str(self._customer.get("timezone") or "UTC")
        # A clock time is counted from now, not from the previous step.
        self.state.clock = workflow.now()
        if self.time_scale != 1.0:
            return await self._wait(timedelta(seconds=1))  # test runs do not wait for a day
        return await self._wait(lambda: until_local(workflow.now(), at, zone))

    async def _fresh_context(self) -> dict[str, Any]:
        result = await workflow.execute_activity(
            CUSTOMER_CONTEXT,
            CustomerContextInput(customer_id=self.customer_id),
            summary=f"Read customer {self.customer_id}'s profile for step {self.state.pc}",
            result_type=CustomerContextResult,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=ACTIVITY_RETRY,
        )
        self._customer = result.customer
        return {**self.context(), "customer": result.customer}

    def _unsubscribed(self) -> bool:
        consent = self._customer.get("consent") or {}
        return not any(consent.get(channel) is True for channel in ("email", "sms", "whatsapp"))

    async def _send(self, op: Op) -> str | None:
        send = op.send
        assert send is not None
        self.state.clock = workflow.now()
        context = await self._fresh_context()
        exits = self.definition.exit
        if exits.conditions is not None and evaluate(
            exits.conditions, context, numeric_equality=self._numeric_eq()
        ):
            return "exit_condition"
        if "unsubscribed" in exits.events and self._unsubscribed():
            return "unsubscribed"
        if self.vet is not None and (reason := self.vet(context)):
            return reason
        # Held out: the send goes to the ledger as "suppressed (held out)", never out.
        held_out = self.state.rule.holdout and workflow.patched(HOLDOUT_PATCH)
        coupon = None if held_out else await self._coupon(op.path, send)
        beside = workflow.patched(FALLBACK_BESIDE_PATCH)
        outcomes = []
        for channels in [send.channels] if send.mode == "first" else [[c] for c in send.channels]:
            suffix = "" if send.mode == "first" else f"/{channels[0]}"
            request = self._request(op.path, suffix, send, channels, coupon, context)
            watch = None
            if beside:
                # A wait for quiet hours or a cap ends with the journey (an order, an
                # unsubscribe): the message is given up, not sent in the morning.
                outcome, watch = await self.messenger.dispatch(
                    request, halt=self._stopped, hold=self._on_hold
                )
            else:
                outcome = await self.messenger.send(request)
            outcomes.append(outcome)
            step = self._record(op.path, outcome, coupon)
            if watch is not None:
                self._watches.append(asyncio.create_task(self._follow(watch, step, coupon)))
        if coupon is not None:
            reached = any(o.status in _REACHED for o in outcomes)
            if reached:
                await workflow.execute_activity(
                    SUPERSEDE_COUPONS,
                    coupon.code,
                    summary=f"Revoke the smaller coupons this one ({coupon.code}) replaces",
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=ACTIVITY_RETRY,
                )
            else:
                await workflow.execute_activity(
                    REVOKE_COUPON,
                    RevokeCouponInput(code=coupon.code, reason="its message did not go out"),
                    summary=f"Revoke coupon {coupon.code}: its message did not go out",
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=ACTIVITY_RETRY,
                )
        return None

    def _record(
        self, path: str, outcome: MessageOutcome, coupon: IssueCouponResult | None
    ) -> SentStep:
        step = SentStep(
            path=path,
            channel=outcome.channel,
            status=outcome.status,
            message_id=str(outcome.message_id) if outcome.message_id else None,
            coupon_code=coupon.code if coupon else None,
            at=workflow.now(),
        )
        self.state.sent.append(step)
        return step

    def _stopped(self) -> bool:
        return self.stop() is not None

    def _halted(self) -> bool:
        return self._over or self._stopped()

    async def _follow(self, watch: Watch, step: SentStep, coupon: IssueCouponResult | None) -> None:
        """Beside the sequence: the provider's verdict on a step's message and, on a hard
        bounce or an undeliverable number, the same step on the next channel. Its ledger
        key is the step's own with the next attempt number, so it can neither repeat nor
        collide with a later step's message."""
        current: Watch | None = watch
        while current is not None:
            report = await self.messenger.verdict(current, self._halted)
            if report is not None and report.status == "delivered":
                step.status = "delivered"
            if not undelivered(report) or self._halted():
                return
            assert report is not None
            step.status = report.status
            if self.state.paused:  # the next channel waits for ops to resume
                await workflow.wait_condition(lambda: not self.state.paused or self._halted())
                if self._halted():
                    return
            outcome, current = await self.messenger.dispatch(
                current.request,
                attempt=current.attempt + 1,
                excluded=current.tried,
                halt=self._halted,
                hold=self._on_hold,
            )
            step = self._record(step.path, outcome, coupon)
        if coupon is not None and step.status not in _REACHED and not self._halted():
            await workflow.execute_activity(
                REVOKE_COUPON,
                RevokeCouponInput(code=coupon.code, reason="its message did not go out"),
                summary=f"Revoke coupon {coupon.code}: its message did not go out",
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=ACTIVITY_RETRY,
            )

    async def _coupon(self, path: str, send: Send) -> IssueCouponResult | None:
        if send.incentive is None:
            return None
        return await workflow.execute_activity(
            ISSUE_COUPON,
            IssueCouponInput(
                issue_key=f"{self.key}/{path}",
                percent_off=send.incentive.percent_off,
                expires_in=send.incentive.expires_in,
                customer_id=self.customer_id,
                cart_id=self.cart_id,
                rule_id=self.state.rule.rule_id,
                rule_version=self.state.rule.version,
                step=path,
                source=send.incentive.source,
            ),
            summary=f"Issue a {send.incentive.percent_off}% coupon for step {path}",
            result_type=IssueCouponResult,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=ACTIVITY_RETRY,
        )

    def _request(
        self,
        path: str,
        suffix: str,
        send: Send,
        channels: list[Any],
        coupon: IssueCouponResult | None,
        context: dict[str, Any],
    ) -> MessageRequest:
        variables = {k: v for k, v in context.items() if k not in ("customer", "event")}
        if "recommendations" in self._customer:
            variables.setdefault("recommendations", self._customer["recommendations"])
        if coupon is not None:
            variables["coupon"] = {
                "code": coupon.code,
                "percent_off": coupon.percent_off,
                "expires_at": coupon.expires_at.isoformat(),
            }
        quiet: QuietHours | str | None = self.definition.quiet_hours
        rule = self.state.rule
        return MessageRequest(
            key=f"{self.key}/{path}{suffix}",
            customer_id=self.customer_id,
            channels=channels,
            template=send.template,
            kind="marketing",
            context=variables,
            quiet_hours=None if self.test else quiet,
            frequency_cap=timedelta(0) if self.test else None,
            cap_policy=send.cap_policy,
            fallback_window=timedelta(minutes=10) / self.time_scale,
            workflow_id=self.workflow_id,
            rule_id=rule.rule_id,
            rule_version=rule.version,
            step=path,
            variant=self.state.variant,
            cart_id=self.cart_id,
            coupon_code=coupon.code if coupon else None,
            held_out=rule.holdout,
        )
