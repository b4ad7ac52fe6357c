"""What providers tell us after a send (delivered, opened, bounced…) and what customers
reply (STOP, START, anything else): recorded once, applied to the ledger, suppressions and
consent, and passed on to the workflows concerned through the dispatcher's outbox."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import search_attributes as sa
from contracts.fields import unix_instant
from contracts.messages import Channel, InboundMessageSignal, MessageStatusUpdate
from contracts.names import INBOUND_SIGNAL, MESSAGE_STATUS_SIGNAL
from db.models import InboundMessage, Message, MessageEvent, Suppression
from services.delivery import outbox
from services.messaging import suppressions
from services.platform import metrics

log = logging.getLogger(__name__)

# A status only moves forward; bounced/failed may follow sent but nothing follows them.
_RANK = {
    "queued": 0,
    "sending": 1,
    "sent": 2,
    "delivered": 3,
    "bounced": 3,
    "failed": 3,
    "opened": 4,
    "clicked": 5,
}
# Workflows hear about what can change their course; opens and clicks stay in the ledger.
_SIGNALLED = frozenset({"delivered", "bounced", "failed"})

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT"})
START_WORDS = frozenset({"START", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})

# Twilio delivery errors that mean the number cannot receive on this channel.
_TWILIO_UNDELIVERABLE = {
    "21610": ("all", "stop"),
    "30005": ("all", "invalid"),  # unknown destination handset
    "30006": ("all", "invalid"),  # landline or unreachable carrier
    "63014": ("all", "blocked"),
    "63024": ("all", "invalid"),
}


def _parse_uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError):
        return None


async def _claim(
    session: AsyncSession,
    *,
    provider: str,
    provider_event_id: str,
    message_id: uuid.UUID | None,
    status: str,
    occurred_at: datetime,
    payload: dict[str, Any],
) -> bool:
    """Record a provider event once; False when it was already recorded (a retry)."""
    inserted = await session.scalar(
        insert(MessageEvent)
        .values(
            provider=provider,
            provider_event_id=provider_event_id,
            message_id=message_id,
            status=status,
            occurred_at=occurred_at,
            payload=payload,
        )
        .on_conflict_do_nothing()
        .returning(MessageEvent.id)
    )
    return inserted is not None


def _advance(row: Message, status: str, at: datetime) -> bool:
    """Move the ledger forward; return whether the status changed."""
    current = _RANK.get(row.status, 0)
    if row.status in ("bounced", "failed", "suppressed") or _RANK[status] <= current:
        return False
    row.status = status
    metrics.message(row.channel, status)
    stamp = {
        "sent": "sent_at",
        "delivered": "delivered_at",
        "opened": "opened_at",
        "clicked": "clicked_at",
        "bounced": "failed_at",
        "failed": "failed_at",
    }[status]
    if getattr(row, stamp) is None:
        setattr(row, stamp, at)
    return True


def _tell_workflow(session: AsyncSession, row: Message, status: str) -> bool:
    """Route the status to the row's workflow when it can change its course; whether it did."""
    if not row.workflow_id or status not in _SIGNALLED or row.channel is None:
        return False
    update = MessageStatusUpdate(
        message_id=row.id,
        key=row.key,
        channel=row.channel,
        status=status,
        error_code=row.error_code,
    )
    outbox.add_signal(
        session,
        origin="provider",
        workflow_id=row.workflow_id,
        signal_name=MESSAGE_STATUS_SIGNAL,
        payload=update.model_dump(mode="json"),
    )
    return True


# SendGrid event -> ledger status.
_SENDGRID_STATUS = {
    "processed": "sent",
    "delivered": "delivered",
    "open": "opened",
    "click": "clicked",
    "bounce": "bounced",
    "dropped": "failed",
}


async def apply_sendgrid_events(session: AsyncSession, events: list[dict[str, Any]]) -> int:
    """Apply a batch from SendGrid's Event Webhook; returns how many were new."""
    applied = 0
    routed = False
    for event in events:
        kind = str(event.get("event", ""))
        event_id = event.get("sg_event_id")
        if not event_id:
            continue
        # A missing, absurd or future timestamp counts as now: a status is never dated
        # before Unix time or after its own arrival.
        now = datetime.now(UTC)
        at = unix_instant(event.get("timestamp")) or now
        if at > now or at.year < 2000:
            at = now
        message_id = _parse_uuid(event.get("sutra_message_id"))
        row = await session.get(Message, message_id, with_for_update=True) if message_id else None
        if not await _claim(
            session,
            provider="sendgrid",
            provider_event_id=str(event_id),
            message_id=row.id if row else None,
            status=kind,
            occurred_at=at,
            payload=event,
        ):
            continue
        applied += 1
        email = str(event.get("email") or (row.to if row else "") or "")
        status = _SENDGRID_STATUS.get(kind)
        if kind == "bounce" and event.get("type") == "blocked":
            status = "failed"  # a block is the receiving server's mood, not a dead address
        if row is not None and status is not None:
            if status in ("bounced", "failed"):
                row.error_code = str(event.get("status") or kind)
                row.error_message = str(event.get("reason") or "")[:1000]
            if row.provider_message_id is None and event.get("sg_message_id"):
                row.provider_message_id = str(event["sg_message_id"]).split(".")[0]
            if _advance(row, status, at) and _tell_workflow(session, row, status):
                routed = True
        if email:
            await _sendgrid_suppression(session, kind, event, email, row)
    if routed:
        await outbox.notify(session)
    return applied


async def _sendgrid_suppression(
    session: AsyncSession, kind: str, event: dict[str, Any], email: str, row: Message | None
) -> None:
    customer_id = row.customer_id if row else None
    reason = str(event.get("reason") or "")
    if (kind == "bounce" and event.get("type") != "blocked") or (
        kind == "dropped" and "Bounced Address" in reason
    ):
        await suppressions.suppress(
            session,
            channel="email",
            address=email,
            scope="all",
            reason="bounce",
            source="sendgrid",
            customer_id=customer_id,
            detail=reason[:500],
        )
    elif kind == "spamreport":
        await suppressions.suppress(
            session,
            channel="email",
            address=email,
            scope="all",
            reason="spamreport",
            source="sendgrid",
            customer_id=customer_id,
            message_id=row.id if row else None,
        )
    elif kind in ("unsubscribe", "group_unsubscribe") or (
        kind == "dropped" and "Unsubscribed Address" in reason
    ):
        await suppressions.suppress(
            session,
            channel="email",
            address=email,
            scope="marketing",
            reason=kind if kind != "dropped" else "unsubscribe",
            source="sendgrid",
            customer_id=customer_id,
            message_id=row.id if row and kind != "dropped" else None,
        )
        customers = await suppressions.customers_with_address(session, "email", email)
        await suppressions.set_consent(
            session, customers=customers, channel="email", granted=False, source="sendgrid_" + kind
        )
    elif kind == "group_resubscribe":
        await suppressions.lift(
            session,
            channel="email",
            address=email,
            reasons=("group_unsubscribe", "unsubscribe"),
        )


# Twilio MessageStatus -> ledger status; the rest (queued, sending, …) are steps on the way.
_TWILIO_STATUS = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "opened",
    "undelivered": "failed",
    "failed": "failed",
}


async def apply_twilio_status(
    session: AsyncSession, form: dict[str, str], message_id: str | None
) -> bool:
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    raw_status = form.get("MessageStatus") or form.get("SmsStatus") or ""
    if not sid or not raw_status:
        return False
    row = None
    parsed = _parse_uuid(message_id)
    if parsed is not None:
        row = await session.get(Message, parsed, with_for_update=True)
    if row is None:
        row = await session.scalar(
            select(Message)
            .where(Message.provider == "twilio", Message.provider_message_id == sid)
            .with_for_update()
        )
    now = datetime.now(UTC)
    if not await _claim(
        session,
        provider="twilio",
        provider_event_id=f"{sid}:{raw_status}",
        message_id=row.id if row else None,
        status=raw_status,
        occurred_at=now,
        payload=form,
    ):
        return False
    if row is None:
        log.warning("Twilio status %s for unknown message %s", raw_status, sid)
        return True
    if row.provider_message_id is None:
        row.provider_message_id = sid  # the witness for a send cut off mid-call
    # Twilio accepted it: enough to call a "sending" row sent.
    status = _TWILIO_STATUS.get(raw_status, "sent")
    error = form.get("ErrorCode")
    if status == "failed":
        row.error_code = error or raw_status
        row.error_message = form.get("ErrorMessage") or f"Twilio reported {raw_status}"
        if error in _TWILIO_UNDELIVERABLE and row.channel and row.to:
            scope, reason = _TWILIO_UNDELIVERABLE[error]
            await suppressions.suppress(
                session,
                channel=row.channel,  # type: ignore[arg-type]
                address=row.to,
                scope=scope,  # type: ignore[arg-type]
                reason=reason,
                source="twilio",
                customer_id=row.customer_id,
                detail=f"{error}: {row.error_message}",
            )
    if _advance(row, status, now) and _tell_workflow(session, row, status):
        await outbox.notify(session)
    return True


def keyword(body: str) -> str | None:
    word = body.strip().upper().rstrip(".!")
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    if word in HELP_WORDS:
        return "help"
    return None


async def apply_inbound(session: AsyncSession, form: dict[str, str]) -> InboundMessage | None:
    """A customer's SMS or WhatsApp message. STOP and START change consent at once."""
    sid = form.get("MessageSid") or form.get("SmsMessageSid") or ""
    sender = form.get("From", "")
    if not sid or not sender:
        return None
    channel: Channel = "whatsapp" if sender.startswith("whatsapp:") else "sms"
    phone = suppressions.normalize_address(channel, sender)
    body = form.get("Body", "")
    word = keyword(body)
    if word is None and body.strip().upper() == "YES":
        # YES is an opt-in keyword only for a number that opted out; otherwise it is an
        # answer (to an order confirmation, say) for the customer's journeys.
        stopped = await session.scalar(
            select(Suppression.id).where(
                Suppression.channel == channel,
                Suppression.address == phone,
                Suppression.reason == "stop",
                Suppression.lifted_at.is_(None),
            )
        )
        word = "start" if stopped else None
    customers = await suppressions.customers_with_address(session, "sms", phone)
    inbound_id = await session.scalar(
        insert(InboundMessage)
        .values(
            provider_message_id=sid,
            channel=channel,
            from_address=phone,
            to_address=suppressions.normalize_address(channel, form.get("To", "")),
            body=body,
            keyword=word,
            customer_id=customers[0].id if customers else None,
        )
        .on_conflict_do_nothing()
        .returning(InboundMessage.id)
    )
    if inbound_id is None:
        return None  # Twilio retried a webhook we already took
    if word == "stop":
        await suppressions.suppress(
            session,
            channel=channel,
            address=phone,
            scope="all",
            reason="stop",
            source="inbound_keyword",
            customer_id=customers[0].id if customers else None,
            detail=body[:100],
        )
        await suppressions.set_consent(
            session, customers=customers, channel=channel, granted=False, source="stop_keyword"
        )
    elif word == "start":
        await suppressions.lift(session, channel=channel, address=phone, reasons=("stop",))
        await suppressions.set_consent(
            session, customers=customers, channel=channel, granted=True, source="start_keyword"
        )
    inbound = await session.get(InboundMessage, inbound_id)
    assert inbound is not None
    for customer in customers:
        outbox.add_signal(
            session,
            origin="inbound",
            # One ordering lane per customer: their replies arrive in order.
            workflow_id=f"customer:{customer.id}",
            signal_name=INBOUND_SIGNAL,
            payload=InboundMessageSignal(
                inbound_id=inbound_id,
                customer_id=customer.id,
                channel=channel,
                body=body,
                keyword=word,
                received_at=inbound.received_at,
            ).model_dump(mode="json"),
            target_query=sa.equals(sa.CUSTOMER_ID, customer.id),
        )
    if customers:
        await outbox.notify(session)
    return inbound
