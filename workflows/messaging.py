"""Sending from a workflow: the part of every journey that talks to customers.

Not a workflow itself: journeys hold a ``Messenger`` and forward their ``message_status``
signal to it. It waits out quiet hours and frequency caps on durable timers, and when a
provider reports a bounce or an undeliverable number within the fallback window it sends
the same step on the next allowed channel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from contracts.messages import (
        SEND_MESSAGE,
        Channel,
        MessageOutcome,
        MessageRequest,
        MessageStatusUpdate,
        SendMessageInput,
        SendMessageResult,
    )

SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
)
_SETTLED = frozenset({"delivered", "opened", "clicked", "bounced", "failed"})
_UNDELIVERED = frozenset({"bounced", "failed"})


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
        """``dispatched`` is called once the first channel has taken the message (or it
        was settled otherwise), before any wait for a bounce: callers that must keep their
        messages in order start the next one then."""
        excluded: list[Channel] = []
        attempt = 1
        while True:
            try:
                result = await workflow.execute_activity(
                    SEND_MESSAGE,
                    SendMessageInput(request=request, attempt=attempt, exclude_channels=excluded),
                    result_type=SendMessageResult,
                    start_to_close_timeout=request.send_timeout,
                    schedule_to_close_timeout=timedelta(days=1),
                    retry_policy=SEND_RETRY,
                )
            except ActivityError as err:
                if dispatched is not None:
                    dispatched()
                return MessageOutcome(
                    status="failed", reason=f"gave up: {err.cause or err}", attempts=attempt
                )
            if result.status == "deferred":
                wait = (result.until - workflow.now()) if result.until else timedelta(minutes=1)
                await workflow.sleep(max(wait, timedelta(seconds=1)))
                continue
            if dispatched is not None:
                dispatched()
            outcome = MessageOutcome(
                status="sent" if result.status == "sent" else result.status,
                channel=result.channel,
                message_id=result.message_id,
                reason=result.reason,
                attempts=attempt,
            )
            if result.status == "suppressed":
                return outcome
            tried = [*excluded, result.channel] if result.channel else excluded
            others = [c for c in request.channels if c not in tried]
            if result.status == "failed":
                if result.channel and others:
                    excluded, attempt = tried, attempt + 1
                    continue
                return outcome
            if others and request.fallback_window > timedelta(0) and result.message_id:
                report = await self._watch(str(result.message_id), request.fallback_window)
                if report is not None and report.status in _UNDELIVERED:
                    excluded, attempt = tried, attempt + 1
                    continue
                if report is not None and report.status == "delivered":
                    outcome.status = "delivered"
            return outcome

    async def _watch(self, message_id: str, window: timedelta) -> MessageStatusUpdate | None:
        """The provider's verdict on a message, if it comes within ``window``."""

        def settled() -> bool:
            report = self._reports.get(message_id)
            return report is not None and report.status in _SETTLED

        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(settled, timeout=window)
        return self._reports.get(message_id)
