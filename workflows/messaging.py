"""Sending from a workflow: the part of every journey that talks to customers.

Not a workflow itself: journeys hold a ``Messenger`` and forward their ``message_status``
signal to it. It waits out quiet hours and frequency caps on durable timers, and when a
provider reports a bounce or an undeliverable number within the fallback window it sends
the same step on the next allowed channel.

Two ways to use it: ``send`` is the whole send, the wait for the provider's verdict
included (order messages, which already go out beside their workflow, and journeys that
started before ``dispatch`` existed); ``dispatch`` returns as soon as a channel has taken
the message, with a ``Watch`` the caller follows beside its own sequence (``verdict``, then
``dispatch`` again on the next channel).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from contracts.messages import (
        ABANDON_MESSAGE,
        SEND_MESSAGE,
        AbandonMessageInput,
        Channel,
        MessageOutcome,
        MessageRequest,
        MessageStatusUpdate,
        SendMessageInput,
        SendMessageResult,
    )
    from contracts.retry_policies import SEND_RETRY

_SETTLED = frozenset({"delivered", "opened", "clicked", "bounced", "failed"})
_UNDELIVERED = frozenset({"bounced", "failed"})


@dataclass
class Watch:
    """A message one channel took while others remain: if its provider reports it
    undeliverable within the request's fallback window, the step goes out on the next."""

    request: MessageRequest
    message_id: str
    attempt: int
    tried: list[Channel] = field(default_factory=list)


class Messenger:
    def __init__(self) -> None:
        self._reports: dict[str, MessageStatusUpdate] = {}

    def on_status(self, update: MessageStatusUpdate) -> None:
        """Forwarded from the workflow's ``message_status`` signal handler."""
        current = self._reports.get(str(update.message_id))
        # A late "delivered" must not hide a bounce already reported, nor the reverse.
        if current is None or current.status not in _SETTLED:
            self._reports[str(update.message_id)] = update

    def report(self, message_id: str) -> MessageStatusUpdate | None:
        return self._reports.get(message_id)

    async def send(
        self, request: MessageRequest, dispatched: Callable[[], None] | None = None
    ) -> MessageOutcome:
        """The whole send: returns once the provider's verdict is in or the fallback window
        has passed, after sending the step on the next channel if it bounced.

        ``dispatched`` is called once the first channel has taken the message (or it was
        settled otherwise), before any wait for a bounce: callers that must keep their
        messages in order start the next one then."""
        excluded: list[Channel] = []
        attempt = 1
        while True:
            try:
                result = await _call(request, attempt, excluded)
            except ActivityError as err:
                if dispatched is not None:
                    dispatched()
                return _gave_up(err, attempt)
            if result.status == "deferred":
                await workflow.sleep(_deferral(result))
                continue
            if dispatched is not None:
                dispatched()
            outcome = _outcome(result, attempt)
            if result.status == "suppressed":
                return outcome
            tried, others = _channels_left(request, result, excluded)
            if result.status == "failed":
                if result.channel and others:
                    excluded, attempt = tried, attempt + 1
                    continue
                return outcome
            if _watchable(request, result, others):
                report = await self._watch(str(result.message_id), request.fallback_window)
                if report is not None and report.status in _UNDELIVERED:
                    excluded, attempt = tried, attempt + 1
                    continue
                if report is not None and report.status == "delivered":
                    outcome.status = "delivered"
            return outcome

    async def dispatch(
        self,
        request: MessageRequest,
        *,
        attempt: int = 1,
        excluded: list[Channel] | None = None,
        halt: Callable[[], bool] | None = None,
        hold: Callable[[], bool] | None = None,
    ) -> tuple[MessageOutcome, Watch | None]:
        """Send until a channel takes the message or none can, and return at once: the
        outcome, and a ``Watch`` when a bounce could still move it to another channel.

        Waits for quiet hours or a frequency cap on a durable timer; with ``halt``, such a
        wait ends as soon as ``halt()`` is true and the message is given up (``suppressed``),
        so a fallback never goes out after the journey ended. While ``hold()`` is true
        (ops paused the journey) a deferred message waits for it to turn false."""
        excluded = list(excluded or [])
        while True:
            try:
                result = await _call(request, attempt, excluded)
            except ActivityError as err:
                return _gave_up(err, attempt), None
            if result.status == "deferred":
                if halt is None:
                    await workflow.sleep(_deferral(result))
                    continue
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(halt, timeout=_deferral(result))
                if hold is not None and hold() and not halt():
                    await workflow.wait_condition(lambda: not hold() or halt())
                if not halt():
                    continue
                reason = "the journey ended before it could go out"
                # Its row says "queued, deferred"; it must not read as still on its way.
                await workflow.execute_activity(
                    ABANDON_MESSAGE,
                    AbandonMessageInput(
                        ledger_key=SendMessageInput(request=request, attempt=attempt).ledger_key,
                        reason=reason,
                    ),
                    summary="Mark the deferred message given up: the journey ended",
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=SEND_RETRY,
                )
                gone = MessageOutcome(
                    status="suppressed",
                    channel=result.channel,
                    message_id=result.message_id,
                    reason=reason,
                    attempts=attempt,
                )
                return gone, None
            outcome = _outcome(result, attempt)
            if result.status == "suppressed":
                return outcome, None
            tried, others = _channels_left(request, result, excluded)
            if result.status == "failed":
                if result.channel and others:
                    excluded, attempt = tried, attempt + 1
                    continue
                return outcome, None
            if _watchable(request, result, others):
                return outcome, Watch(request, str(result.message_id), attempt, tried)
            return outcome, None

    async def verdict(self, watch: Watch, halt: Callable[[], bool]) -> MessageStatusUpdate | None:
        """The provider's report on the watched message once it settles, or whatever it had
        said when the window closed or ``halt()`` became true."""

        def settled() -> bool:
            report = self._reports.get(watch.message_id)
            return halt() or (report is not None and report.status in _SETTLED)

        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(settled, timeout=watch.request.fallback_window)
        return self._reports.get(watch.message_id)

    async def _watch(self, message_id: str, window: timedelta) -> MessageStatusUpdate | None:
        """The provider's verdict on a message, if it comes within ``window``."""

        def settled() -> bool:
            report = self._reports.get(message_id)
            return report is not None and report.status in _SETTLED

        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(settled, timeout=window)
        return self._reports.get(message_id)


def undelivered(report: MessageStatusUpdate | None) -> bool:
    """A hard bounce or an undeliverable number: the step should try its next channel."""
    return report is not None and report.status in _UNDELIVERED


async def _call(
    request: MessageRequest, attempt: int, excluded: list[Channel]
) -> SendMessageResult:
    return await workflow.execute_activity(
        SEND_MESSAGE,
        SendMessageInput(request=request, attempt=attempt, exclude_channels=excluded),
        summary=f"Send {request.template} (attempt {attempt})",
        result_type=SendMessageResult,
        start_to_close_timeout=request.send_timeout,
        schedule_to_close_timeout=timedelta(days=1),
        retry_policy=SEND_RETRY,
    )


def _deferral(result: SendMessageResult) -> timedelta:
    wait = (result.until - workflow.now()) if result.until else timedelta(minutes=1)
    return max(wait, timedelta(seconds=1))


def _gave_up(err: ActivityError, attempt: int) -> MessageOutcome:
    return MessageOutcome(status="failed", reason=f"gave up: {err.cause or err}", attempts=attempt)


def _channels_left(
    request: MessageRequest, result: SendMessageResult, excluded: list[Channel]
) -> tuple[list[Channel], list[Channel]]:
    """The channels tried so far, this result's included, and those not yet tried."""
    tried = [*excluded, result.channel] if result.channel else excluded
    return tried, [c for c in request.channels if c not in tried]


def _watchable(request: MessageRequest, result: SendMessageResult, others: list[Channel]) -> bool:
    """Whether a bounce could still move this message to another channel. The outbox never
    reports: nothing to watch for. (Results recorded before ``reports`` existed read True,
    so their runs replay the watch they made.)"""
    return bool(
        others and request.fallback_window > timedelta(0) and result.message_id and result.reports
    )


def _outcome(result: SendMessageResult, attempt: int) -> MessageOutcome:
    return MessageOutcome(
        status="sent" if result.status == "sent" else result.status,
        channel=result.channel,
        message_id=result.message_id,
        reason=result.reason,
        attempts=attempt,
    )
