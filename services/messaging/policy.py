"""The send policy: may this message go now, on which channel, or must it wait or be dropped.

Each rule of the road is one check; ``decide`` runs them in this order. Per channel, in the
request's order: not already failed for this step, an address, consent (marketing only),
no suppression, a template that renders, and for WhatsApp the 24-hour service window (or an
approved content template). The first channel passing them all is chosen; none passing is
"no channel can take it", with every channel's reason. Then, for marketing only: quiet hours
in the customer's own zone (defer to their end) and the frequency cap (skip, or defer until
the cap has passed).

Every decision that holds a message back carries a ``code`` as well as its words, which
the ledger keeps (``details["suppressed"]``, ``details["deferrals"]``) for analytics:
``consent`` (every channel asked for was refused because the customer said no: no consent
or an opt-out suppression), ``no_channel`` (any other reason no channel could take it),
``frequency_cap`` (skipped by the cap), and for deferrals ``quiet_hours`` and
``frequency_cap``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from config.settings import Settings
from contracts.messages import Channel, MessageRequest, QuietHours, SendMessageInput
from contracts.time_zones import resolve_zone
from db.models import Customer, InboundMessage, Message
from services.messaging import suppressions
from services.templating.renderer import Rendered, TemplateError

WHATSAPP_WINDOW = timedelta(hours=24)


@dataclass
class Go:
    channel: Channel
    address: str
    rendered: Rendered


@dataclass
class Defer:
    channel: Channel
    until: datetime
    reason: str


@dataclass
class Suppress:
    channel: Channel | None
    reason: str
    code: str = "no_channel"


@dataclass
class Refusal:
    """Why one channel cannot take the message; ``consent``: the customer said no."""

    text: str
    consent: bool = False


# Suppressions that are the customer's own "no" (the rest are addresses that do not work).
OPT_OUTS = frozenset({"unsubscribe", "group_unsubscribe", "stop", "spamreport"})


Decision = Go | Defer | Suppress
# Renders the message for one channel (the caller knows the template, overrides and links).
Render = Callable[[Channel], Awaitable[Rendered]]


async def decide(
    session: AsyncSession,
    settings: Settings,
    input: SendMessageInput,
    customer: Customer,
    now: datetime,
    render: Render,
) -> Decision:
    reasons: list[Refusal] = []
    chosen: Go | None = None
    for channel in input.request.channels:
        outcome = await _channel_open(session, input, customer, channel, now, render)
        if isinstance(outcome, Go):
            chosen = outcome
            break
        reasons.append(outcome)
    if chosen is None:
        return no_channel(reasons)
    if input.request.kind != "marketing":
        return chosen
    deferred = quiet_hours(settings, input.request, customer, chosen.channel, now)
    if deferred is not None:
        return deferred
    capped = await frequency_cap(session, settings, input, customer, chosen.channel, now)
    if capped is not None:
        return capped
    return chosen


async def _channel_open(
    session: AsyncSession,
    input: SendMessageInput,
    customer: Customer,
    channel: Channel,
    now: datetime,
    render: Render,
) -> Go | Refusal:
    """The channel ready to take the message, or why it cannot."""
    request = input.request
    if channel in input.exclude_channels:
        return Refusal(f"{channel}: already failed for this step")
    address = customer.email if channel == "email" else customer.phone
    if not address:
        return Refusal(f"{channel}: no address")
    refusal = no_consent(request, customer, channel)
    if refusal is not None:
        return Refusal(refusal, consent=True)
    blocked = await suppressions.blocking(
        session, channel=channel, address=address, kind=request.kind
    )
    if blocked is not None:
        return Refusal(f"{channel}: suppressed ({blocked.reason})", blocked.reason in OPT_OUTS)
    try:
        rendered = await render(channel)
    except TemplateError as exc:
        return Refusal(f"{channel}: template error: {exc}")
    closed = await whatsapp_window_closed(session, channel, address, rendered, now)
    if closed is not None:
        return Refusal(closed)
    return Go(channel, address, rendered)


def no_consent(request: MessageRequest, customer: Customer, channel: Channel) -> str | None:
    if request.kind == "marketing" and getattr(customer, f"consent_{channel}") is not True:
        return f"{channel}: no consent"
    return None


async def whatsapp_window_closed(
    session: AsyncSession, channel: Channel, address: str, rendered: Rendered, now: datetime
) -> str | None:
    """Outside the 24 hours after the customer's last WhatsApp message only an approved
    content template may be sent."""
    if (
        channel == "whatsapp"
        and not rendered.whatsapp_content_sid
        and not await _whatsapp_window_open(session, address, now)
    ):
        return "whatsapp: outside the 24-hour window and no approved content template"
    return None


async def _whatsapp_window_open(session: AsyncSession, phone: str, now: datetime) -> bool:
    last = await session.scalar(
        select(func.max(InboundMessage.received_at)).where(
            InboundMessage.channel == "whatsapp", InboundMessage.from_address == phone
        )
    )
    return last is not None and now - last < WHATSAPP_WINDOW


def no_channel(reasons: list[Refusal]) -> Suppress:
    consent = bool(reasons) and all(r.consent for r in reasons)
    return Suppress(
        None,
        "no channel can take it: " + "; ".join(r.text for r in reasons),
        "consent" if consent else "no_channel",
    )


def quiet_hours(
    settings: Settings,
    request: MessageRequest,
    customer: Customer,
    channel: Channel,
    now: datetime,
) -> Defer | None:
    quiet = request.quiet_hours
    if quiet == "default":
        quiet = QuietHours(start=settings.quiet_hours_start, end=settings.quiet_hours_end)
    if quiet is not None:
        zone = resolve_zone(customer.timezone, settings.default_timezone)
        if in_quiet_hours(now.astimezone(zone).time(), quiet):
            return Defer(channel, quiet_hours_end(now, zone, quiet), "quiet_hours")
    return None


async def frequency_cap(
    session: AsyncSession,
    settings: Settings,
    input: SendMessageInput,
    customer: Customer,
    channel: Channel,
    now: datetime,
) -> Suppress | Defer | None:
    request = input.request
    cap = request.frequency_cap
    if cap is None:
        cap = settings.frequency_cap
    if cap <= timedelta(0):
        return None
    # A message another journey is sending right now counts as sent: the customer
    # lock makes this check and that send one after the other.
    went_out = func.coalesce(Message.sent_at, Message.sending_started_at)
    last = await session.scalar(
        select(func.max(went_out)).where(
            Message.customer_id == customer.id,
            Message.channel == channel,
            Message.kind == "marketing",
            Message.status.in_(("sending", "sent", "delivered", "opened", "clicked")),
            went_out > now - cap,
            Message.key != input.ledger_key,
        )
    )
    if last is None:
        return None
    if request.cap_policy == "skip":
        return Suppress(channel, "frequency_cap", "frequency_cap")
    return Defer(channel, last + cap, "frequency_cap")


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
