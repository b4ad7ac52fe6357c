"""A text whose send was cut off is looked up at Twilio before it is sent again, and a call
still on its way in is waited for: the customer gets it once. In process, against the real
Twilio SDK and the fake Twilio, on the real database."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels import build_adapters
from channels.base import TransientSendError
from contracts.messages import MessageRequest, SendMessageInput
from db.models import Message
from services.messaging.send import Messaging
from tests.conftest import make_settings
from tests.factories import CART_CONTEXT, eventually, known_customer
from tests.provider_reports import phone
from tests.providers.fake_twilio import FakeTwilio

TIMEOUT = 1.0  # the provider timeout: a call cut off can land up to 3 s after it began


def _messaging(
    database_url: str, sessionmaker: async_sessionmaker[AsyncSession], twilio: FakeTwilio
) -> Messaging:
    settings = make_settings(
        database_url,
        "127.0.0.1:7233",
        "unused",
        twilio_account_sid=twilio.account_sid,
        twilio_auth_token=twilio.auth_token,
        twilio_api_base_url=twilio.base_url,
        twilio_sms_from="+15005550006",
        provider_timeout=timedelta(seconds=TIMEOUT),
        log_level="WARNING",
    )
    return Messaging(settings, sessionmaker, build_adapters(settings))


async def _reminder(
    sessionmaker: async_sessionmaker[AsyncSession], number: str
) -> SendMessageInput:
    customer_id = await known_customer(sessionmaker, phone=number)
    request = MessageRequest(
        key=f"lookups/{customer_id}/reminder",
        customer_id=customer_id,
        channels=["sms"],
        template="cart_reminder_1",
        context=CART_CONTEXT,
        step="reminder",
        quiet_hours=None,
    )
    return SendMessageInput(request=request)


async def test_a_text_cut_off_after_a_lookup_is_waited_for_not_sent_twice(
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_twilio: FakeTwilio,
):
    messaging = _messaging(database_url, sessionmaker, fake_twilio)
    number = phone()
    send = await _reminder(sessionmaker, number)

    # The first attempt never reaches Twilio, and its call times out.
    fake_twilio.hold(drop=True)
    with pytest.raises(TransientSendError):
        await messaging.send(send)
    fake_twilio.release()
    # The second finds nothing, waits until the first call cannot land any more, finds
    # nothing again and sends: Twilio takes the text in, lists it only later, and this
    # call times out too.
    fake_twilio.hold(late=True)
    second_began = time.monotonic()
    with pytest.raises(TransientSendError):
        await messaging.send(send)
    lookups = [c for c in fake_twilio.calls if c.method == "GET" and c.to == number]
    assert len(lookups) == 2, lookups
    assert lookups[1].at - second_began >= 3 * TIMEOUT - 1.5, "the second did not wait"

    # The third does not find the second's text at once: it must look again once that
    # call, not that attempt, has had its time to land, and find it.
    third = asyncio.create_task(messaging.send(send))

    async def looked_up() -> bool:
        calls = [c for c in fake_twilio.calls if c.method == "GET" and c.to == number]
        return len(calls) == 3

    await eventually(looked_up, within=10, interval=0.02, what="the third attempt's lookup")
    fake_twilio.release()
    result = await third

    assert result.status == "sent"
    assert len(fake_twilio.sent_to(number)) == 1, fake_twilio.sent_to(number)
    assert result.provider_message_id == fake_twilio.sent_to(number)[0].sid
    async with sessionmaker() as session:
        [row] = await session.scalars(select(Message).where(Message.to == number))
    assert (row.status, row.provider_attempts) == ("sent", 3)
