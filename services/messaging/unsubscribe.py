"""Unsubscribe links: signed, so they work without a login and cannot be forged."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.ext.asyncio import AsyncSession

from config.settings import Settings
from contracts.messages import Channel
from db.models import Customer
from services.messaging import suppressions

_SALT = "sutra.unsubscribe.v1"


@dataclass(frozen=True)
class UnsubscribeToken:
    customer_id: str
    channel: Channel
    message_id: str | None


def _serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(settings.secret_key.get_secret_value(), salt=_SALT)


def unsubscribe_url(
    settings: Settings, *, customer_id: str, channel: Channel, message_id: UUID | None
) -> str:
    # Not time-limited: a link in a year-old email must still work.
    token = _serializer(settings).dumps(
        {"c": customer_id, "ch": channel, "m": str(message_id) if message_id else None}
    )
    return f"{settings.public_url}/u/{token}"


def read_token(settings: Settings, token: str) -> UnsubscribeToken | None:
    try:
        data = _serializer(settings).loads(token)
    except BadSignature:
        return None
    if not isinstance(data, dict) or data.get("ch") not in ("email", "sms", "whatsapp"):
        return None
    return UnsubscribeToken(
        customer_id=str(data["c"]), channel=data["ch"], message_id=data.get("m")
    )


def _uuid(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        return None


async def opt_out(session: AsyncSession, token: UnsubscribeToken) -> None:
    """What a link's unsubscribe does: the customer's address suppressed for marketing on
    the link's channel, and their consent to it withdrawn. A link naming no customer Sutra
    holds changes nothing."""
    customer = await session.get(Customer, token.customer_id, with_for_update=True)
    if customer is None:
        return
    channel = token.channel
    address = customer.email if channel == "email" else customer.phone
    if address:
        await suppressions.suppress(
            session,
            channel=channel,
            address=address,
            scope="marketing",
            reason="unsubscribe",
            source="unsubscribe_link",
            customer_id=customer.id,
            detail=f"message {token.message_id}" if token.message_id else None,
            message_id=_uuid(token.message_id),
        )
    await suppressions.set_consent(
        session,
        customers=[customer],
        channel=channel,
        granted=False,
        source="unsubscribe_link",
    )
