"""The message ledger: one ``messages`` row per message, recorded before any provider sees it.

The ledger row's ``key`` is deterministic (workflow id, step, attempt). Its status says how
far a send got: ``queued`` (nothing sent; maybe deferred), ``sending`` (a provider call was
started), then ``sent`` and later what the provider reports. A retried activity finding
``sending`` does not send again until it has asked the provider (Twilio keeps every
message) or waited for the provider's own report (SendGrid's event webhook).

The functions taking a session work in the transaction of the ``Messaging`` step that
calls them and never commit; ``reconcile`` happens between transactions (it may wait).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels.base import (
    ChannelAdapter,
    OutgoingMessage,
    PermanentSendError,
    Receipt,
    TransientSendError,
)
from config.settings import Settings
from contracts.messages import Channel, SendMessageInput, SendMessageResult
from db.models import Message
from services.messaging import suppressions
from services.platform import metrics

log = logging.getLogger(__name__)

# Once past these, a retried activity reports the ledger row instead of acting again.
FINAL = frozenset({"sent", "delivered", "opened", "clicked", "bounced", "failed", "suppressed"})

# When the latest provider call of a message began (details): a cut-off call younger than a
# few provider timeouts may still land, so a lookup that misses it proves nothing yet.
_CALL_AT = "provider_call_at"
# Set when that call ended in an error answer from the provider itself (not a timeout).
_ANSWERED = "provider_answered"


class AwaitingProvider(Exception):
    """A send was cut off mid-call; the provider has not yet said whether it got it."""


@dataclass
class ProviderCall:
    """A provider call about to be made (or looked up, when ``ambiguous``)."""

    outgoing: OutgoingMessage
    adapter: ChannelAdapter
    message_id: Any
    started: datetime
    call_at: datetime | None  # when the row's latest provider call began
    ambiguous: bool
    answered: bool


async def locked(session: AsyncSession, key: str) -> Message | None:
    """The row of ``key``, locked for this transaction."""
    return await session.scalar(select(Message).where(Message.key == key).with_for_update())


def new_row(input: SendMessageInput) -> Message:
    request = input.request
    return Message(
        id=uuid.uuid4(),  # known before the insert: the unsubscribe link carries it
        key=input.ledger_key,
        customer_id=request.customer_id,
        template=request.template,
        kind=request.kind,
        status="queued",
        coupon_code=request.coupon_code,
        rule_id=request.rule_id,
        rule_version=request.rule_version,
        step=request.step,
        workflow_id=request.workflow_id,
        cart_id=request.cart_id,
        order_id=request.order_id,
        details={
            "attempt": input.attempt,
            "channels": list(request.channels),
            **({"variant": request.variant} if request.variant else {}),
        },
    )


def provider_call_at(row: Message) -> datetime | None:
    value = (row.details or {}).get(_CALL_AT)
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def provider_answered(row: Message) -> bool:
    return bool((row.details or {}).get(_ANSWERED))


def record_suppressed(
    row: Message, channel: Channel | None, reason: str, code: str = "no_channel"
) -> None:
    """``code``: the reason in one word, which analytics count by (policy.py lists them)."""
    row.status, row.reason, row.channel = "suppressed", reason, channel
    row.deferred_until = None
    metrics.message(channel, "suppressed")
    row.details = {**(row.details or {}), "suppressed": code}


def record_deferred(
    row: Message, channel: Channel, until: datetime, reason: str, now: datetime
) -> None:
    row.status, row.reason = "queued", reason
    row.channel, row.deferred_until = channel, until
    metrics.message(channel, "deferred")
    # The ledger keeps every wait, so ops can see why a message went late.
    deferrals = [*(row.details or {}).get("deferrals", [])]
    deferrals.append({"reason": reason, "at": now.isoformat(), "until": until.isoformat()})
    row.details = {**(row.details or {}), "deferrals": deferrals}


def record_sending(row: Message, now: datetime) -> None:
    """A provider call begins now (the row's content is filled in already)."""
    row.status, row.reason, row.deferred_until = "sending", None, None
    row.sending_started_at = now
    metrics.message(row.channel, "sending")
    details = {k: v for k, v in (row.details or {}).items() if k != _ANSWERED}
    row.details = {**details, _CALL_AT: now.isoformat()}


async def record_sent(
    session: AsyncSession, message_id: Any, provider_id: str | None, now: datetime
) -> SendMessageResult:
    row = await session.get(Message, message_id, with_for_update=True)
    assert row is not None
    if row.status in ("queued", "sending"):
        row.status = "sent"
        metrics.message(row.channel, "sent")
    row.sent_at = row.sent_at or now
    row.provider_message_id = row.provider_message_id or provider_id
    row.error_code = row.error_message = None
    return result(row)


async def record_failed(
    session: AsyncSession,
    message_id: Any,
    outgoing: OutgoingMessage,
    exc: PermanentSendError,
    now: datetime,
) -> SendMessageResult:
    row = await session.get(Message, message_id, with_for_update=True)
    assert row is not None
    row.status, row.failed_at = "failed", now
    metrics.message(row.channel, "failed")
    row.error_code, row.error_message = exc.code, exc.message
    row.reason = f"provider refused: {exc.code} {exc.message}"[:1000]
    if exc.suppress is not None:
        await suppressions.suppress(
            session,
            channel=outgoing.channel,
            address=outgoing.to,
            scope=exc.suppress.scope,
            reason=exc.suppress.reason,
            source="provider_error",
            customer_id=row.customer_id,
            detail=f"{exc.code}: {exc.message}",
        )
    return result(row)


async def note_transient(session: AsyncSession, message_id: Any, exc: TransientSendError) -> None:
    """A refused call leaves the row ``queued`` (the provider has nothing); any other
    stays ``sending`` for the next attempt to look up or wait out."""
    row = await session.get(Message, message_id, with_for_update=True)
    if row is None or row.status != "sending":
        return
    row.error_code = exc.code
    if exc.not_sent:
        row.status = "queued"
    elif exc.answered:
        row.details = {**(row.details or {}), _ANSWERED: True}


async def abandon(session: AsyncSession, ledger_key: str, reason: str) -> None:
    """A message that never went out and never will (its journey ended while it waited
    for quiet hours or a cap): ``queued`` becomes ``suppressed``, nothing else changes."""
    row = await locked(session, ledger_key)
    if row is not None and row.status == "queued":
        row.status, row.reason, row.deferred_until = "suppressed", reason[:1000], None
        metrics.message(row.channel, "suppressed")
        row.details = {**(row.details or {}), "suppressed": "abandoned"}


async def reconcile(
    call: ProviderCall,
    now: datetime,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> Receipt | None:
    """An earlier attempt started a provider call and vanished, or got an error that
    does not say whether the provider kept the message. Did the provider get it?
    (A provider that reports by webhook is asked through the row, read afresh.)"""
    adapter, outgoing, message_id, started = (
        call.adapter,
        call.outgoing,
        call.message_id,
        call.started,
    )
    if adapter.can_look_up:
        with metrics.provider_call(adapter.provider, "look_up", _look_up_error):
            receipt = await adapter.find_sent(outgoing, since=started)
        # A call that timed out on our side may still be on its way into the provider
        # (queued, slow): "not found" only means "not sent" once it cannot land anymore.
        # A call the provider answered (a 500) is over: the lookup already knows.
        settle = settings.provider_timeout * 3
        waited = now - (call.call_at or started)
        if receipt is None and not call.answered and waited < settle:
            log.info(
                "send of %s was cut off %.1f s after its call; not at %s yet, looking again"
                " in %.1f s",
                message_id,
                waited.total_seconds(),
                adapter.provider,
                (settle - waited).total_seconds(),
            )
            await asyncio.sleep((settle - waited).total_seconds())
            with metrics.provider_call(adapter.provider, "look_up", _look_up_error):
                receipt = await adapter.find_sent(outgoing, since=started)
        log.info("send of %s was cut off; provider has it: %s", message_id, bool(receipt))
        return receipt
    if adapter.provider == "outbox":
        return None  # nothing leaves the outbox: sending again harms no one
    async with sessionmaker() as session:
        row = await session.get(Message, message_id)
    if row is not None and row.status in FINAL:
        return Receipt(provider=adapter.provider, provider_message_id=row.provider_message_id)
    if now - started < settings.send_confirmation_grace:
        raise AwaitingProvider(
            f"send of {message_id} was cut off; waiting for {adapter.provider} to report it"
        )
    log.warning(
        "send of %s was cut off and %s reported nothing in %s; sending again",
        message_id,
        adapter.provider,
        settings.send_confirmation_grace,
    )
    return None


def _look_up_error(exc: BaseException) -> str:
    return "transient" if isinstance(exc, TransientSendError) else "unexpected"


def result(row: Message) -> SendMessageResult:
    status = row.status
    if status == "queued":
        return SendMessageResult(
            status="deferred",
            message_id=row.id,
            channel=row.channel,
            until=row.deferred_until,
            reason=row.reason,
        )
    mapped = {"suppressed": "suppressed", "failed": "failed"}.get(status, "sent")
    if status == "bounced":
        mapped = "failed"
    return SendMessageResult(
        status=mapped,
        message_id=row.id,
        channel=row.channel,
        reason=row.reason,
        provider=row.provider,
        provider_message_id=row.provider_message_id,
    )
