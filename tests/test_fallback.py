"""A journey's step moves to the next channel when the first fails: refused by the provider
at once, or reported bounced afterwards. Transient trouble is retried, never doubled."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from contracts.messages import MessageOutcome, MessageRequest
from db.models import Message, Suppression
from tests.conftest import Api, make_settings, start_api
from tests.factories import CART_CONTEXT, cart_updated, eventually, uid
from tests.messaging_workflow import MessageTestInput, MessageTestWorkflow
from tests.providers.fake_sendgrid import FakeSendGrid
from tests.providers.fake_twilio import FakeTwilio
from tests.providers.signing import SendGridSigner
from worker import Workers, build_worker

SIGNER = SendGridSigner()


@pytest.fixture
def provider_settings(
    database_url: str,
    dev_server: WorkflowEnvironment,
    task_queue: str,
    fake_twilio: FakeTwilio,
    fake_sendgrid: FakeSendGrid,
) -> Settings:
    return make_settings(
        database_url,
        dev_server.client.service_client.config.target_host,
        task_queue,
        twilio_account_sid=fake_twilio.account_sid,
        twilio_auth_token=fake_twilio.auth_token,
        twilio_api_base_url=fake_twilio.base_url,
        twilio_sms_from="+15005550006",
        sendgrid_api_key=fake_sendgrid.api_key,
        sendgrid_host=fake_sendgrid.url,
        sendgrid_webhook_public_key=SIGNER.public_key,
        email_from="orders@shop.example",
        sms_dlt_entity_id="1101234567890123456",
        # A failed call is retried only once it can no longer land (three provider timeouts):
        # the fakes answer in milliseconds, and the default 10 s made this test take 34 s.
        provider_timeout=timedelta(seconds=3),
    )


@pytest.fixture
async def stack(
    provider_settings: Settings,
    dev_server: WorkflowEnvironment,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[tuple[Api, Workers]]:
    api, lifespan = await start_api(provider_settings)
    worker = build_worker(
        dev_server.client,
        provider_settings.temporal_task_queue,
        sessionmaker,
        provider_settings,
        extra_workflows=[MessageTestWorkflow],
    )
    async with worker:
        yield api, worker
    await api.http.aclose()
    await lifespan.__aexit__(None, None, None)


async def _journey(
    dev_server: WorkflowEnvironment,
    settings: Settings,
    customer_id: str,
    channels: list[str],
    **overrides: Any,
) -> WorkflowHandle[MessageTestWorkflow, list[MessageOutcome]]:
    workflow_id = f"fallback-journey/{uuid.uuid4().hex[:8]}"
    request = MessageRequest(
        key=f"{workflow_id}/step-1",
        customer_id=customer_id,
        channels=channels,
        template="cart_reminder_1",
        context=CART_CONTEXT,
        quiet_hours=None,
        frequency_cap=None,
        workflow_id=workflow_id,
        **overrides,
    )
    return await dev_server.client.start_workflow(
        MessageTestWorkflow.run,
        MessageTestInput(customer_id=customer_id, requests=[request]),
        id=workflow_id,
        task_queue=settings.temporal_task_queue,
    )


async def _ledger(
    sessionmaker: async_sessionmaker[AsyncSession], workflow_id: str
) -> list[Message]:
    async with sessionmaker() as session:
        rows = await session.scalars(
            select(Message).where(Message.workflow_id == workflow_id).order_by(Message.key)
        )
        return list(rows)


async def test_an_invalid_number_fails_at_once_and_the_step_goes_out_by_email(
    stack: tuple[Api, Workers],
    provider_settings: Settings,
    dev_server: WorkflowEnvironment,
    fake_twilio: FakeTwilio,
    fake_sendgrid: FakeSendGrid,
    sessionmaker: async_sessionmaker[AsyncSession],
):
    api, _ = stack
    phone = "+923001238001"
    event = cart_updated(customer_id=uid("c"), phone=phone, email=f"{uid('e')}@example.com")
    await api.post_event(event)
    fake_twilio.fail_next(400, 21211, "The 'To' number is not a valid phone number.", to=phone)

    handle = await _journey(
        dev_server, provider_settings, event["customer"]["id"], ["sms", "email"]
    )
    [outcome] = await asyncio.wait_for(handle.result(), timeout=30)

    assert (outcome.status, outcome.channel, outcome.attempts) == ("sent", "email", 2)
    sms, email = await _ledger(sessionmaker, handle.id)
    assert (sms.channel, sms.status, sms.error_code) == ("sms", "failed", "21211")
    assert (email.channel, email.status) == ("email", "sent")
    assert fake_twilio.posts_to(phone) == 1, "a permanent refusal is not retried"
    assert len(fake_sendgrid.sent_to(event["customer"]["email"])) == 1
    async with sessionmaker() as session:
        suppression = await session.scalar(
            select(Suppression).where(Suppression.channel == "sms", Suppression.address == phone)
        )
    assert suppression is not None
    assert (suppression.scope, suppression.reason) == ("all", "invalid")


async def test_a_bounce_reported_later_sends_the_step_on_the_next_channel(
    stack: tuple[Api, Workers],
    provider_settings: Settings,
    dev_server: WorkflowEnvironment,
    fake_twilio: FakeTwilio,
    fake_sendgrid: FakeSendGrid,
    sessionmaker: async_sessionmaker[AsyncSession],
):
    api, _ = stack
    phone = "+923001238002"
    event = cart_updated(customer_id=uid("c"), phone=phone, email=f"{uid('e')}@example.com")
    await api.post_event(event)

    handle = await _journey(
        dev_server,
        provider_settings,
        event["customer"]["id"],
        ["email", "sms"],
        fallback_window=timedelta(minutes=5),
    )

    async def emailed() -> Message | None:
        rows = await _ledger(sessionmaker, handle.id)
        return rows[0] if rows and rows[0].status == "sent" else None

    email = await eventually(emailed, what="the email to be sent")
    body = json.dumps(
        [
            {
                "email": email.to,
                "timestamp": int(time.time()),
                "event": "bounce",
                "type": "bounce",
                "reason": "550 5.1.1 mailbox does not exist",
                "sg_event_id": uuid.uuid4().hex,
                "sg_message_id": f"{email.provider_message_id}.filter0001",
                "sutra_message_id": str(email.id),
            }
        ]
    ).encode()
    hook = await api.http.post("/v1/webhooks/sendgrid", content=body, headers=SIGNER.headers(body))
    assert hook.status_code == 200
    [outcome] = await asyncio.wait_for(handle.result(), timeout=30)

    assert (outcome.status, outcome.channel, outcome.attempts) == ("sent", "sms", 2)
    bounced, texted = await _ledger(sessionmaker, handle.id)
    assert (bounced.status, texted.status) == ("bounced", "sent")
    [sms] = fake_twilio.sent_to(phone)
    assert sms.status_callback is not None
    assert sms.status_callback.endswith(f"message_id={texted.id}")


async def test_a_provider_outage_is_retried_and_the_message_goes_out_once(
    stack: tuple[Api, Workers],
    provider_settings: Settings,
    dev_server: WorkflowEnvironment,
    fake_twilio: FakeTwilio,
    sessionmaker: async_sessionmaker[AsyncSession],
):
    api, _ = stack
    phone = "+919812345678"
    event = cart_updated(customer_id=uid("c"), phone=phone, locale="hi-IN")
    await api.post_event(event)
    fake_twilio.fail_next(500, 20500, "Internal Server Error", times=2, to=phone)

    handle = await _journey(dev_server, provider_settings, event["customer"]["id"], ["sms"])
    [outcome] = await asyncio.wait_for(handle.result(), timeout=60)

    assert outcome.status == "sent"
    [row] = await _ledger(sessionmaker, handle.id)
    [delivered] = fake_twilio.sent_to(phone)
    assert row.provider_message_id == delivered.sid
    assert fake_twilio.posts_to(phone) == 3
    assert "संदेश बंद करने के लिए STOP" in delivered.body  # the Hindi template, for hi-IN
    # India's DLT registration travels with every SMS to +91.
    assert row.details["dlt_entity_id"] == "1101234567890123456"
