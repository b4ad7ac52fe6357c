"""Re-sending a failed or bounced message, for ops: a new ledger row linked to the old one.

The new row's key is derived from the old row's (``{old key}/resend``, or a digest of it
when that would not fit), and ``messages.resend_of`` is unique: however often ops ask, one
message is re-sent once, and asking again answers that same re-send. It goes out through
``Messaging`` like any other message, on the old message's channel and with its words as
they were rendered then: consent, suppressions (a hard bounce suppresses the address) and
the customer's current address hold; quiet hours and the frequency cap do not, because ops
asked for it now and no journey would pick a deferred re-send up later.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels.base import TransientSendError
from contracts.errors import Conflict, NotFound, ServiceUnavailable
from contracts.messages import MessageRequest, SendMessageInput
from db.models import Message
from services.messaging import ledger
from services.messaging.send import Messaging
from services.templating.renderer import Rendered

RESENDABLE = frozenset({"failed", "bounced"})
_KEY_LIMIT = 400


def resend_key(old_key: str) -> str:
    key = f"{old_key}/resend"
    if len(key) <= _KEY_LIMIT:
        return key
    return f"resend/{hashlib.sha256(old_key.encode()).hexdigest()}"


def _request(old: Message) -> SendMessageInput:
    assert old.channel is not None
    request = MessageRequest(
        key=resend_key(old.key),
        customer_id=old.customer_id,
        channels=[old.channel],
        template=old.template,
        kind=old.kind,
        quiet_hours=None,
        frequency_cap=timedelta(0),
        workflow_id=old.workflow_id,
        rule_id=old.rule_id,
        rule_version=old.rule_version,
        step=old.step,
        variant=(old.details or {}).get("variant"),
        cart_id=old.cart_id,
        order_id=old.order_id,
        coupon_code=old.coupon_code,
    )
    # attempt 0: the ledger key is the request's key with "#0", unlike any journey's.
    return SendMessageInput(request=request, attempt=0)


def _content(old: Message) -> Rendered:
    assert old.channel is not None
    details = old.details or {}
    return Rendered(
        channel=old.channel,  # type: ignore[arg-type]
        locale=old.locale or "en",
        text=old.body or "",
        subject=old.subject,
        html=old.html,
        whatsapp_content_sid=details.get("whatsapp_content_sid"),
        whatsapp_variables=details.get("whatsapp_variables"),
        sms_dlt_template_id=details.get("dlt_template_id"),
    )


async def _resend_of(session: AsyncSession, message_id: uuid.UUID) -> Message | None:
    return await session.scalar(select(Message).where(Message.resend_of == message_id))


async def resend(
    messaging: Messaging, sessionmaker: async_sessionmaker[AsyncSession], message_id: uuid.UUID
) -> tuple[Message, bool]:
    """Re-send message ``message_id``; return the new message and whether this call
    created it (False: it had been re-sent before, and that re-send is the answer).

    Owns its transactions: the new row is committed before ``Messaging`` (which owns its
    own) calls the provider, so a repeated or concurrent request finds it."""
    async with sessionmaker() as session, session.begin():
        old = await session.get(Message, message_id)
        if old is None:
            raise NotFound(f"no message {message_id}")
        existing = await _resend_of(session, message_id)
        if existing is None and old.status not in RESENDABLE:
            raise Conflict(
                f"message {message_id} is {old.status}: only a failed or bounced message is"
                " re-sent",
                current_status=old.status,
            )
        if existing is None and old.channel is None:
            raise Conflict(f"message {message_id} never had a channel", current_status=old.status)
        send, content = _request(old), _content(old)
    created = False
    if existing is None:
        try:
            async with sessionmaker() as session, session.begin():
                row = ledger.new_row(send)
                row.resend_of = message_id
                session.add(row)
            created = True
        except IntegrityError:
            pass  # a concurrent request created it first: it is ours to answer with
    async with sessionmaker() as session:
        current = await _resend_of(session, message_id)
    assert current is not None
    if current.status in ("queued", "sending"):
        try:
            await messaging.send(send, content=content)
        except (TransientSendError, ledger.AwaitingProvider) as exc:
            raise ServiceUnavailable(
                f"the provider did not take the re-send yet ({exc}); ask again: the same"
                " re-send is tried, never a second one",
                headers={"Retry-After": "10"},
            ) from exc
        async with sessionmaker() as session:
            current = await _resend_of(session, message_id)
        assert current is not None
    return current, created
