"""The send activity: every message any workflow sends goes through here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from channels.base import TransientSendError
from contracts.messages import (
    ABANDON_MESSAGE,
    SEND_MESSAGE,
    AbandonMessageInput,
    SendMessageInput,
    SendMessageResult,
)
from services.messaging.ledger import AwaitingProvider
from services.messaging.send import Messaging

# "Retry-After: 0" (or a date already past) still gets a breath between attempts.
MIN_RETRY_DELAY = timedelta(seconds=1)

_log = structlog.get_logger("sutra.messaging")


class MessagingActivities:
    def __init__(self, messaging: Messaging) -> None:
        self._messaging = messaging

    @activity.defn(name=SEND_MESSAGE)
    async def send_message(self, input: SendMessageInput) -> SendMessageResult:
        """Render, check, record, send. Permanent refusals come back as a result (so the
        journey can fall back to another channel); transient trouble raises, to retry."""
        # The server's clock for this attempt: real time in production, the skipped-to time
        # on the time-skipping test server; never earlier than this machine's clock.
        now = max(activity.info().current_attempt_scheduled_time, datetime.now(UTC))
        try:
            result = await self._messaging.send(input, now=now)
        except AwaitingProvider as exc:
            raise ApplicationError(str(exc), type="AwaitingProvider") from exc
        except TransientSendError as exc:
            raise ApplicationError(
                f"{exc.code}: {exc.message}",
                type="TransientSendError",
                next_retry_delay=self._delay(exc.retry_after),
            ) from exc
        # One line per message decided (the workflow, rule and key are bound already).
        _log.info(
            f"message {result.status}",
            channel=result.channel,
            provider=result.provider,
            message_id=str(result.message_id) if result.message_id else None,
            reason=result.reason,
        )
        return result

    def _delay(self, asked: timedelta | None) -> timedelta | None:
        """The provider's Retry-After, bounded, replaces the retry policy's next interval;
        without one, the policy's exponential backoff applies."""
        if asked is None:
            return None
        ceiling = self._messaging.settings.provider_retry_after_max
        return min(max(asked, MIN_RETRY_DELAY), ceiling)

    @activity.defn(name=ABANDON_MESSAGE)
    async def abandon_message(self, input: AbandonMessageInput) -> None:
        await self._messaging.abandon(input.ledger_key, input.reason)
