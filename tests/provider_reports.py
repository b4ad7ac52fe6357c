"""Providers that report back, on the time-skipping server: settings for the real SDKs
against the fake SendGrid and Twilio, a customer who can be reached on every channel, and
a provider's verdict on a message (a SendGrid bounce, a Twilio "undelivered") applied as
its verified webhook would and delivered to the sending workflow as the dispatcher would."""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from config.settings import Environment, Settings
from contracts.events import EVENT_ADAPTER
from db.models import EventRoute, InboundMessage, Message
from services.customers.profiles import upsert_from_events
from services.messaging.provider_events import apply_sendgrid_events, apply_twilio_status
from tests.factories import cart_updated, uid
from tests.providers.fake_sendgrid import FakeSendGrid
from tests.providers.fake_twilio import FakeTwilio
from tests.skipping_shop import SkippingShop


def reporting_settings(
    database_url: str, task_queue: str, twilio: FakeTwilio, sendgrid: FakeSendGrid, **values: Any
) -> Settings:
    """Email through SendGrid, SMS and WhatsApp through Twilio (both fakes), no frequency
    cap: a step's fallback may go out on a channel an earlier step used a minute ago."""
    return Settings(
        **{
            "env": Environment.test,
            "database_url": database_url,
            "temporal_task_queue": task_queue,
            "twilio_account_sid": twilio.account_sid,
            "twilio_auth_token": twilio.auth_token,
            "twilio_api_base_url": twilio.base_url,
            "twilio_sms_from": "+15005550006",
            "twilio_whatsapp_from": "+14155238886",
            "sendgrid_api_key": sendgrid.api_key,
            "sendgrid_host": sendgrid.url,
            "email_from": "shop@shop.example",
            "frequency_cap": timedelta(0),
            "provider_timeout": timedelta(seconds=3),
            **values,
        }
    )


def phone() -> str:
    """A Pakistani mobile number of this customer's own: suppressions are per address."""
    return f"+92300{secrets.randbelow(10**7):07d}"


async def reachable_customer(shop: SkippingShop, at: datetime) -> tuple[str, str]:
    """A customer in Karachi with an address and consent on every channel, who wrote to
    the shop on WhatsApp just now (its 24-hour window is open); ``(id, phone)``."""
    customer_id, number = uid("c"), phone()
    event = cart_updated(
        customer_id=customer_id, items=[], email=f"{customer_id}@example.com", phone=number
    )
    async with shop.sessionmaker() as session, session.begin():
        await upsert_from_events(session, [EVENT_ADAPTER.validate_python(event)])
        session.add(
            InboundMessage(
                provider_message_id="SM" + uuid.uuid4().hex,
                channel="whatsapp",
                from_address=number,
                to_address="+14155238886",
                body="Is the lawn suit in stock?",
                customer_id=customer_id,
                received_at=at,
            )
        )
    return customer_id, number


async def ledger(shop: SkippingShop, workflow_id: str) -> list[Message]:
    """Every message a workflow asked for, in the order they went out."""
    async with shop.sessionmaker() as session:
        rows = await session.scalars(
            select(Message)
            .where(Message.workflow_id == workflow_id)
            .order_by(Message.sent_at.nulls_last(), Message.created_at)
        )
        return list(rows)


async def report_undelivered(shop: SkippingShop, message: Message) -> None:
    """The provider says the message will never arrive: a hard bounce for an email, an
    unknown handset for SMS and WhatsApp (Twilio 30005)."""
    async with shop.sessionmaker() as session, session.begin():
        if message.channel == "email":
            applied = await apply_sendgrid_events(
                session,
                [
                    {
                        "email": message.to,
                        "timestamp": int(time.time()),
                        "event": "bounce",
                        "type": "bounce",
                        "reason": "550 5.1.1 mailbox does not exist",
                        "sg_event_id": uuid.uuid4().hex,
                        "sg_message_id": f"{message.provider_message_id}.filter0001",
                        "sutra_message_id": str(message.id),
                    }
                ],
            )
            assert applied == 1
        else:
            assert message.provider_message_id is not None
            form = {
                "MessageSid": message.provider_message_id,
                "MessageStatus": "undelivered",
                "ErrorCode": "30005",
                "ErrorMessage": "Unknown destination handset",
            }
            assert await apply_twilio_status(session, form, str(message.id))
    await deliver_reports(shop, str(message.workflow_id))


async def deliver_reports(shop: SkippingShop, workflow_id: str) -> None:
    """Deliver the ``message_status`` signals provider webhooks stored for a workflow."""
    async with shop.sessionmaker() as session, session.begin():
        rows = (
            await session.scalars(
                select(EventRoute)
                .where(
                    EventRoute.origin == "provider",
                    EventRoute.workflow_id == workflow_id,
                    EventRoute.status == "pending",
                )
                .order_by(EventRoute.seq)
                .with_for_update()
            )
        ).all()
        for row in rows:
            row.status = "delivered"
            route = {c.name: getattr(row, c.name) for c in EventRoute.__table__.columns}
            await shop.dispatcher._deliver(route)
