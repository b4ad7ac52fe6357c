"""Sending one message: choose the channel, check the rules of the road (policy.py), render,
record (ledger.py), send — in that order, so that the ledger knows of every message before
a provider does.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels import build_adapters
from channels.base import (
    ChannelAdapter,
    OutgoingMessage,
    PermanentSendError,
    TransientSendError,
)
from config.settings import Settings
from contracts.messages import Channel, MessageRequest, SendMessageInput, SendMessageResult
from db.models import Customer, Message
from services.messaging import ledger, policy
from services.messaging.ledger import AwaitingProvider, ProviderCall
from services.messaging.unsubscribe import unsubscribe_url
from services.platform import metrics
from services.templating import overrides as templating_overrides
from services.templating.renderer import Rendered, Renderer

# The ledger's reason for a held-out journey's step: ops see why nothing went.
HELD_OUT = "held out: the customer is in the rule's holdout group, no message is sent"


class _Clock:
    """This attempt's time: the ``now`` it was given, moving on as the attempt runs. A
    provider call is stamped when it begins, not when its attempt began: a lookup of a
    cut-off call waits out the call's own settling time, which a stamp from before the
    attempt's earlier lookups (and their wait) would shorten, and the message could then
    land at the provider after a second one was sent."""

    def __init__(self, now: datetime) -> None:
        self._start, self._began = now, time.monotonic()

    def __call__(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._began)


def send_error_kind(exc: BaseException) -> str:
    """How a channel adapter's failure counts in ``sutra_provider_errors_total``."""
    if isinstance(exc, PermanentSendError):
        return "permanent"
    return "transient" if isinstance(exc, TransientSendError) else "unexpected"


class Messaging:
    """Sends one message.

    Owns its transactions: the ledger row is committed before the provider is called, and
    what the provider answered is committed after, so no transaction (nor the customer's
    row lock) is held across a provider call. Each commit is one named step: ``_prepare``,
    ``_record_sent``, ``_record_failed``, ``_note_transient``, ``abandon``.
    """

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        adapters: dict[Channel, ChannelAdapter],
        renderer: Renderer | None = None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.adapters = adapters
        self.renderer = renderer or Renderer()
        self._silent = frozenset(a.provider for a in adapters.values() if not a.reports_status)

    @classmethod
    def for_settings(
        cls,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        renderer: Renderer | None = None,
    ) -> Messaging:
        """With the channel adapters these settings configure (the outbox where none)."""
        return cls(settings, sessionmaker, build_adapters(settings), renderer)

    async def send(
        self, input: SendMessageInput, now: datetime | None = None, content: Rendered | None = None
    ) -> SendMessageResult:
        """Send one message. ``content``: words already rendered (a re-send of a failed
        message), sent as they are instead of rendering the template again; the rules of
        the road still decide whether and where it goes."""
        result = await self._send(input, now, content)
        # The row's provider, which may be another than today's for this channel.
        result.reports = result.provider not in self._silent
        return result

    async def _send(
        self, input: SendMessageInput, now: datetime | None, content: Rendered | None = None
    ) -> SendMessageResult:
        clock = _Clock(now or datetime.now(UTC))
        call = await self._prepare(input, clock, content=content)
        if isinstance(call, SendMessageResult):
            return call
        if call.ambiguous:
            receipt = await ledger.reconcile(call, clock(), self.settings, self.sessionmaker)
            if receipt is not None:
                return await self._record_sent(
                    call.message_id, receipt.provider_message_id, clock()
                )
            # The provider does not have it: as good as queued, so decided afresh. A retry
            # can come long after the first try (a provider storm), maybe in quiet hours.
            call = await self._prepare(input, clock, resolved=call, content=content)
            if isinstance(call, SendMessageResult):
                return call
        try:
            with metrics.provider_call(call.adapter.provider, "send", send_error_kind):
                receipt = await call.adapter.send(call.outgoing)
        except PermanentSendError as exc:
            return await self._record_failed(call.message_id, call.outgoing, exc, clock())
        except TransientSendError as exc:
            await self._note_transient(call.message_id, exc)
            raise
        return await self._record_sent(call.message_id, receipt.provider_message_id, clock())

    async def _prepare(
        self,
        input: SendMessageInput,
        clock: _Clock,
        resolved: ProviderCall | None = None,
        content: Rendered | None = None,
    ) -> ProviderCall | SendMessageResult:
        """Decide and record, committed before any provider call. ``resolved``: the
        ambiguous call that was shown not to be at the provider; decide it again."""
        request = input.request
        now = clock()
        async with self.sessionmaker() as session, session.begin():
            # The customer row lock serialises this customer's sends, so two journeys
            # cannot both slip under the frequency cap.
            customer = await session.get(Customer, request.customer_id, with_for_update=True)
            row = await ledger.locked(session, input.ledger_key)
            if row is not None and row.status in ledger.FINAL:
                return ledger.result(row)
            if row is None:
                row = ledger.new_row(input)
                session.add(row)
            last_call = ledger.provider_call_at(row)
            if resolved and row.status == "sending" and last_call != resolved.call_at:
                # An attempt that outlived its timeout has called the provider since.
                raise AwaitingProvider(f"send of {row.id} was started again meanwhile")
            ambiguous = row.status == "sending" and resolved is None
            answered = ledger.provider_answered(row)
            if not ambiguous:
                decision = await self._decide(session, input, customer, row, now, content)
                if isinstance(decision, policy.Suppress):
                    ledger.record_suppressed(row, decision.channel, decision.reason, decision.code)
                    return ledger.result(row)
                if isinstance(decision, policy.Defer):
                    ledger.record_deferred(
                        row, decision.channel, decision.until, decision.reason, now
                    )
                    return ledger.result(row)
                self._fill(row, decision)
                ledger.record_sending(row, clock())
            if resolved is None:  # one attempt that reached the provider, lookup or send
                row.provider_attempts += 1
            outgoing = self._outgoing(row)
            adapter = self.adapters[outgoing.channel]
            row.provider = adapter.provider
            started = row.sending_started_at or now
            # Committed on leaving: the ledger holds the message before any provider sees it.
            return ProviderCall(
                outgoing=outgoing,
                adapter=adapter,
                message_id=row.id,
                started=started,
                call_at=last_call,
                ambiguous=ambiguous,
                answered=answered,
            )

    async def _decide(
        self,
        session: AsyncSession,
        input: SendMessageInput,
        customer: Customer | None,
        row: Message,
        now: datetime,
        content: Rendered | None = None,
    ) -> policy.Decision:
        if input.request.held_out:
            return policy.Suppress(None, HELD_OUT)
        if customer is None:
            return policy.Suppress(None, "unknown customer")

        async def render(channel: Channel) -> Rendered:
            if content is not None and content.channel == channel:
                return content
            return await self._render(session, input.request, channel, customer, row)

        return await policy.decide(session, self.settings, input, customer, now, render)

    async def _render(
        self,
        session: AsyncSession,
        request: MessageRequest,
        channel: Channel,
        customer: Customer,
        row: Message,
    ) -> Rendered:
        overrides = await templating_overrides.for_render(
            session, request.template, channel, customer.locale
        )
        link = ""
        if request.kind == "marketing":
            link = unsubscribe_url(
                self.settings, customer_id=customer.id, channel=channel, message_id=row.id
            )
        cart = request.context.get("cart")
        if isinstance(cart, dict) and not cart.get("checkout_url"):
            # Without a checkout link from the shop, the shop itself is the way back.
            request.context["cart"] = {**cart, "checkout_url": self.settings.shop_url}
        context: dict[str, Any] = {
            **request.context,
            "customer": {
                "id": customer.id,
                "name": customer.name or "",
                "first_name": (customer.name or "").split(" ")[0],
                "email": customer.email,
                "phone": customer.phone,
                "locale": customer.locale,
                "timezone": customer.timezone or self.settings.default_timezone,
                "country": customer.country,
            },
            "shop": {
                "name": self.settings.shop_name,
                "url": self.settings.shop_url,
                "support_email": self.settings.shop_support_email,
            },
            "unsubscribe_url": link,
        }
        return self.renderer.render(request.template, channel, customer.locale, context, overrides)

    def _fill(self, row: Message, go: policy.Go) -> None:
        rendered = go.rendered
        row.channel = go.channel
        row.to = go.address
        row.locale = rendered.locale
        row.subject = rendered.subject
        row.body = rendered.text
        row.html = rendered.html
        details = dict(row.details or {})
        if rendered.whatsapp_content_sid:
            details["whatsapp_content_sid"] = rendered.whatsapp_content_sid
            details["whatsapp_variables"] = rendered.whatsapp_variables
        if go.channel == "sms" and go.address.startswith("+91"):
            # India's DLT rules: the registered entity and template travel with the record.
            details["dlt_entity_id"] = self.settings.sms_dlt_entity_id
            details["dlt_template_id"] = rendered.sms_dlt_template_id
        row.details = details

    def _outgoing(self, row: Message) -> OutgoingMessage:
        assert row.channel is not None
        assert row.to is not None
        details = row.details or {}
        link = None
        if row.kind == "marketing" and row.channel == "email":
            link = unsubscribe_url(
                self.settings, customer_id=row.customer_id, channel="email", message_id=row.id
            )
        callback = None
        if row.channel in ("sms", "whatsapp"):
            callback = f"{self.settings.public_url}/v1/webhooks/twilio/status?message_id={row.id}"
        return OutgoingMessage(
            message_id=row.id,
            channel=row.channel,  # type: ignore[arg-type]
            kind=row.kind,  # type: ignore[arg-type]
            template=row.template,
            to=row.to,
            text=row.body or "",
            subject=row.subject,
            html=row.html,
            unsubscribe_url=link,
            status_callback_url=callback,
            whatsapp_content_sid=details.get("whatsapp_content_sid"),
            whatsapp_variables=details.get("whatsapp_variables"),
            categories=(row.template, row.kind),
        )

    async def _record_sent(
        self, message_id: Any, provider_id: str | None, now: datetime
    ) -> SendMessageResult:
        async with self.sessionmaker() as session, session.begin():
            return await ledger.record_sent(session, message_id, provider_id, now)

    async def abandon(self, ledger_key: str, reason: str) -> None:
        """A message that never went out and never will (its journey ended while it waited
        for quiet hours or a cap): ``queued`` becomes ``suppressed``, nothing else changes."""
        async with self.sessionmaker() as session, session.begin():
            await ledger.abandon(session, ledger_key, reason)

    async def _record_failed(
        self, message_id: Any, outgoing: OutgoingMessage, exc: PermanentSendError, now: datetime
    ) -> SendMessageResult:
        async with self.sessionmaker() as session, session.begin():
            return await ledger.record_failed(session, message_id, outgoing, exc, now)

    async def _note_transient(self, message_id: Any, exc: TransientSendError) -> None:
        async with self.sessionmaker() as session, session.begin():
            await ledger.note_transient(session, message_id, exc)
