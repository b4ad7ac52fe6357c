"""Sending one message: choose the channel, check the rules of the road, render, record,
send — in that order, so that the ledger knows of every message before a provider does.

The ledger row's ``key`` is deterministic (workflow id, step, attempt). Its status says how
far a send got: ``queued`` (nothing sent; maybe deferred), ``sending`` (a provider call was
started), then ``sent`` and later what the provider reports. A retried activity finding
``sending`` does not send again until it has asked the provider (Twilio keeps every
message) or waited for the provider's own report (SendGrid's event webhook).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels.base import (
    ChannelAdapter,
    OutgoingMessage,
    PermanentSendError,
    Receipt,
    TransientSendError,
)
from config.settings import Settings
from contracts.messages import (
    Channel,
    MessageRequest,
    QuietHours,
    SendMessageInput,
    SendMessageResult,
)
from db.models import Customer, InboundMessage, Message, TemplateOverride
from services.messaging import suppressions
from services.messaging.unsubscribe import unsubscribe_url
from services.templating.renderer import Rendered, Renderer, TemplateError

log = logging.getLogger(__name__)

WHATSAPP_WINDOW = timedelta(hours=24)
# Once past these, a retried activity reports the ledger row instead of acting again.
FINAL = frozenset({"sent", "delivered", "opened", "clicked", "bounced", "failed", "suppressed"})


class AwaitingProvider(Exception):
    """A send was cut off mid-call; the provider has not yet said whether it got it."""


@dataclass
class _Go:
    channel: Channel
    address: str
    rendered: Rendered


@dataclass
class _Defer:
    channel: Channel
    until: datetime
    reason: str


@dataclass
class _Call:
    """A provider call about to be made (or looked up, when ``ambiguous``)."""

    outgoing: OutgoingMessage
    adapter: ChannelAdapter
    message_id: Any
    started: datetime
    call_at: datetime | None  # when the row's latest provider call began
    ambiguous: bool
    answered: bool


@dataclass
class _Suppress:
    channel: Channel | None
    reason: str


def in_quiet_hours(local: time, quiet: QuietHours) -> bool:
    if quiet.start == quiet.end:
        return False
    if quiet.start < quiet.end:
        return quiet.start <= local < quiet.end
    return local >= quiet.start or local < quiet.end  # the window spans midnight


def quiet_hours_end(now: datetime, zone: ZoneInfo, quiet: QuietHours) -> datetime:
    """The next moment the quiet window ends, in UTC (wall-clock end in the customer's zone)."""
    local = now.astimezone(zone)
    candidate = datetime.combine(local.date(), quiet.end, tzinfo=zone)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), quiet.end, tzinfo=zone)
    return candidate.astimezone(UTC)


def _zone(name: str | None, default: str) -> ZoneInfo:
    for candidate in (name, default, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


class Messaging:
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

    async def send(self, input: SendMessageInput, now: datetime | None = None) -> SendMessageResult:
        result = await self._send(input, now)
        # The row's provider, which may be another than today's for this channel.
        result.reports = result.provider not in self._silent
        return result

    async def _send(self, input: SendMessageInput, now: datetime | None) -> SendMessageResult:
        now = now or datetime.now(UTC)
        call = await self._prepare(input, now)
        if isinstance(call, SendMessageResult):
            return call
        if call.ambiguous:
            receipt = await self._reconcile(call, now)
            if receipt is not None:
                return await self._record_sent(call.message_id, receipt.provider_message_id, now)
            # The provider does not have it: as good as queued, so decided afresh. A retry
            # can come long after the first try (a provider storm), maybe in quiet hours.
            call = await self._prepare(input, now, resolved=call)
            if isinstance(call, SendMessageResult):
                return call
        try:
            receipt = await call.adapter.send(call.outgoing)
        except PermanentSendError as exc:
            return await self._record_failed(call.message_id, call.outgoing, exc, now)
        except TransientSendError as exc:
            await self._note_transient(call.message_id, exc)
            raise
        return await self._record_sent(call.message_id, receipt.provider_message_id, now)

    async def _prepare(
        self, input: SendMessageInput, now: datetime, resolved: _Call | None = None
    ) -> _Call | SendMessageResult:
        """Decide and record, committed before any provider call. ``resolved``: the
        ambiguous call that was shown not to be at the provider; decide it again."""
        request = input.request
        async with self.sessionmaker() as session, session.begin():
            # The customer row lock serialises this customer's sends, so two journeys
            # cannot both slip under the frequency cap.
            customer = await session.get(Customer, request.customer_id, with_for_update=True)
            row = await session.scalar(
                select(Message).where(Message.key == input.ledger_key).with_for_update()
            )
            if row is not None and row.status in FINAL:
                return _result(row)
            if row is None:
                row = self._new_row(input)
                session.add(row)
            last_call = _provider_call_at(row)
            if resolved and row.status == "sending" and last_call != resolved.call_at:
                # An attempt that outlived its timeout has called the provider since.
                raise AwaitingProvider(f"send of {row.id} was started again meanwhile")
            ambiguous = row.status == "sending" and resolved is None
            answered = bool((row.details or {}).get(_ANSWERED))
            if not ambiguous:
                if customer is None:
                    decision: _Go | _Defer | _Suppress = _Suppress(None, "unknown customer")
                else:
                    decision = await self._decide(session, input, customer, row, now)
                if isinstance(decision, _Suppress):
                    row.status, row.reason, row.channel = (
                        "suppressed",
                        decision.reason,
                        decision.channel,
                    )
                    row.deferred_until = None
                    return _result(row)
                if isinstance(decision, _Defer):
                    row.status, row.reason = "queued", decision.reason
                    row.channel, row.deferred_until = decision.channel, decision.until
                    # The ledger keeps every wait, so ops can see why a message went late.
                    deferrals = [*(row.details or {}).get("deferrals", [])]
                    deferrals.append(
                        {
                            "reason": decision.reason,
                            "at": now.isoformat(),
                            "until": decision.until.isoformat(),
                        }
                    )
                    row.details = {**(row.details or {}), "deferrals": deferrals}
                    return _result(row)
                self._fill(row, decision)
                row.status, row.reason, row.deferred_until = "sending", None, None
                row.sending_started_at = now
                details = {k: v for k, v in (row.details or {}).items() if k != _ANSWERED}
                row.details = {**details, _CALL_AT: now.isoformat()}
            if resolved is None:  # one attempt that reached the provider, lookup or send
                row.provider_attempts += 1
            outgoing = self._outgoing(row)
            adapter = self.adapters[outgoing.channel]
            row.provider = adapter.provider
            started = row.sending_started_at or now
            # Committed on leaving: the ledger holds the message before any provider sees it.
            return _Call(
                outgoing=outgoing,
                adapter=adapter,
                message_id=row.id,
                started=started,
                call_at=last_call,
                ambiguous=ambiguous,
                answered=answered,
            )

    def _new_row(self, input: SendMessageInput) -> Message:
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

    async def _decide(
        self,
        session: AsyncSession,
        input: SendMessageInput,
        customer: Customer,
        row: Message,
        now: datetime,
    ) -> _Go | _Defer | _Suppress:
        request = input.request
        marketing = request.kind == "marketing"
        reasons: list[str] = []
        chosen: _Go | None = None
        for channel in request.channels:
            if channel in input.exclude_channels:
                reasons.append(f"{channel}: already failed for this step")
                continue
            address = customer.email if channel == "email" else customer.phone
            if not address:
                reasons.append(f"{channel}: no address")
                continue
            if marketing and getattr(customer, f"consent_{channel}") is not True:
                reasons.append(f"{channel}: no consent")
                continue
            blocked = await suppressions.blocking(
                session, channel=channel, address=address, kind=request.kind
            )
            if blocked is not None:
                reasons.append(f"{channel}: suppressed ({blocked.reason})")
                continue
            try:
                rendered = await self._render(session, request, channel, customer, row)
            except TemplateError as exc:
                reasons.append(f"{channel}: template error: {exc}")
                continue
            if (
                channel == "whatsapp"
                and not rendered.whatsapp_content_sid
                and not await self._whatsapp_window_open(session, address, now)
            ):
                reasons.append(
                    "whatsapp: outside the 24-hour window and no approved content template"
                )
                continue
            chosen = _Go(channel, address, rendered)
            break
        if chosen is None:
            return _Suppress(None, "no channel can take it: " + "; ".join(reasons))
        if not marketing:
            return chosen
        quiet = request.quiet_hours
        if quiet == "default":
            quiet = QuietHours(
                start=self.settings.quiet_hours_start, end=self.settings.quiet_hours_end
            )
        if quiet is not None:
            zone = _zone(customer.timezone, self.settings.default_timezone)
            if in_quiet_hours(now.astimezone(zone).time(), quiet):
                return _Defer(chosen.channel, quiet_hours_end(now, zone, quiet), "quiet_hours")
        cap = request.frequency_cap
        if cap is None:
            cap = self.settings.frequency_cap
        if cap <= timedelta(0):
            return chosen
        # A message another journey is sending right now counts as sent: the customer
        # lock makes this check and that send one after the other.
        went_out = func.coalesce(Message.sent_at, Message.sending_started_at)
        last = await session.scalar(
            select(func.max(went_out)).where(
                Message.customer_id == customer.id,
                Message.channel == chosen.channel,
                Message.kind == "marketing",
                Message.status.in_(("sending", "sent", "delivered", "opened", "clicked")),
                went_out > now - cap,
                Message.key != row.key,
            )
        )
        if last is not None:
            if request.cap_policy == "skip":
                return _Suppress(chosen.channel, "frequency_cap")
            return _Defer(chosen.channel, last + cap, "frequency_cap")
        return chosen

    async def _render(
        self,
        session: AsyncSession,
        request: MessageRequest,
        channel: Channel,
        customer: Customer,
        row: Message,
    ) -> Rendered:
        overrides = {
            o.locale: o.content
            for o in await session.scalars(
                select(TemplateOverride).where(
                    TemplateOverride.name == request.template, TemplateOverride.channel == channel
                )
            )
        }
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

    async def _whatsapp_window_open(self, session: AsyncSession, phone: str, now: datetime) -> bool:
        last = await session.scalar(
            select(func.max(InboundMessage.received_at)).where(
                InboundMessage.channel == "whatsapp", InboundMessage.from_address == phone
            )
        )
        return last is not None and now - last < WHATSAPP_WINDOW

    def _fill(self, row: Message, go: _Go) -> None:
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

    async def _reconcile(self, call: _Call, now: datetime) -> Receipt | None:
        """An earlier attempt started a provider call and vanished, or got an error that
        does not say whether the provider kept the message. Did the provider get it?"""
        adapter, outgoing, message_id, started = (
            call.adapter,
            call.outgoing,
            call.message_id,
            call.started,
        )
        if adapter.can_look_up:
            receipt = await adapter.find_sent(outgoing, since=started)
            # A call that timed out on our side may still be on its way into the provider
            # (queued, slow): "not found" only means "not sent" once it cannot land anymore.
            # A call the provider answered (a 500) is over: the lookup already knows.
            settle = self.settings.provider_timeout * 3
            waited = now - (call.call_at or started)
            if receipt is None and not call.answered and waited < settle:
                await asyncio.sleep((settle - waited).total_seconds())
                receipt = await adapter.find_sent(outgoing, since=started)
            log.info("send of %s was cut off; provider has it: %s", message_id, bool(receipt))
            return receipt
        if adapter.provider == "outbox":
            return None  # nothing leaves the outbox: sending again harms no one
        async with self.sessionmaker() as session:
            row = await session.get(Message, message_id)
        if row is not None and row.status in FINAL:
            return Receipt(provider=adapter.provider, provider_message_id=row.provider_message_id)
        if now - started < self.settings.send_confirmation_grace:
            raise AwaitingProvider(
                f"send of {message_id} was cut off; waiting for {adapter.provider} to report it"
            )
        log.warning(
            "send of %s was cut off and %s reported nothing in %s; sending again",
            message_id,
            adapter.provider,
            self.settings.send_confirmation_grace,
        )
        return None

    async def _record_sent(
        self, message_id: Any, provider_id: str | None, now: datetime
    ) -> SendMessageResult:
        async with self.sessionmaker() as session, session.begin():
            row = await session.get(Message, message_id, with_for_update=True)
            assert row is not None
            if row.status in ("queued", "sending"):
                row.status = "sent"
            row.sent_at = row.sent_at or now
            row.provider_message_id = row.provider_message_id or provider_id
            row.error_code = row.error_message = None
            return _result(row)

    async def abandon(self, ledger_key: str, reason: str) -> None:
        """A message that never went out and never will (its journey ended while it waited
        for quiet hours or a cap): ``queued`` becomes ``suppressed``, nothing else changes."""
        async with self.sessionmaker() as session, session.begin():
            row = await session.scalar(
                select(Message).where(Message.key == ledger_key).with_for_update()
            )
            if row is not None and row.status == "queued":
                row.status, row.reason, row.deferred_until = "suppressed", reason[:1000], None

    async def _record_failed(
        self, message_id: Any, outgoing: OutgoingMessage, exc: PermanentSendError, now: datetime
    ) -> SendMessageResult:
        async with self.sessionmaker() as session, session.begin():
            row = await session.get(Message, message_id, with_for_update=True)
            assert row is not None
            row.status, row.failed_at = "failed", now
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
            return _result(row)

    async def _note_transient(self, message_id: Any, exc: TransientSendError) -> None:
        """A refused call leaves the row ``queued`` (the provider has nothing); any other
        stays ``sending`` for the next attempt to look up or wait out."""
        async with self.sessionmaker() as session, session.begin():
            row = await session.get(Message, message_id, with_for_update=True)
            if row is None or row.status != "sending":
                return
            row.error_code = exc.code
            if exc.not_sent:
                row.status = "queued"
            elif exc.answered:
                row.details = {**(row.details or {}), _ANSWERED: True}


# When the latest provider call of a message began (details): a cut-off call younger than a
# few provider timeouts may still land, so a lookup that misses it proves nothing yet.
_CALL_AT = "provider_call_at"
# Set when that call ended in an error answer from the provider itself (not a timeout).
_ANSWERED = "provider_answered"


def _provider_call_at(row: Message) -> datetime | None:
    value = (row.details or {}).get(_CALL_AT)
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _result(row: Message) -> SendMessageResult:
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
