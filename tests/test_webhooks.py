"""Provider webhooks end to end: signatures on the raw body, statuses into the ledger,
suppressions and consent from bounces, unsubscribes and STOP, replies to journeys."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from channels import build_adapters
from config.settings import Settings
from contracts.messages import InboundMessageSignal, MessageRequest, SendMessageInput
from db.models import ConsentChange, Customer, Message, MessageEvent, Suppression
from services.messaging.send import Messaging
from services.templating.samples import SAMPLES
from tests.conftest import Api, make_settings, start_api
from tests.factories import CART_CONTEXT, cart_updated, eventually, uid
from tests.messaging_workflow import MessageTestInput, MessageTestWorkflow
from tests.providers.fake_twilio import ACCOUNT_SID, AUTH_TOKEN
from tests.providers.signing import SendGridSigner, twilio_headers
from worker import build_worker

PUBLIC_URL = "https://sutra.example.com"
SIGNER = SendGridSigner()
PHONE = "+923001234567"


@pytest.fixture
def hook_settings(database_url: str, dev_server: WorkflowEnvironment, task_queue: str) -> Settings:
    return make_settings(
        database_url,
        dev_server.client.service_client.config.target_host,
        task_queue,
        public_url=PUBLIC_URL,
        sendgrid_webhook_public_key=SIGNER.public_key,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_sms_from="+15005550006",
        # Webhooks are verified with the real secrets; sends stay in the outbox.
        outbox_channels="email,sms,whatsapp",
    )


@pytest.fixture
async def hooks(hook_settings: Settings) -> AsyncIterator[Api]:
    api, lifespan = await start_api(hook_settings)
    yield api
    await api.http.aclose()
    await lifespan.__aexit__(None, None, None)


@pytest.fixture
def messaging(hook_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> Messaging:
    return Messaging(hook_settings, sessionmaker, build_adapters(hook_settings))


async def _customer(api: Api, **overrides: Any) -> str:
    customer_id = uid("c")
    assert (
        await api.post_event(cart_updated(customer_id=customer_id, **overrides))
    ).status_code == 202
    return customer_id


async def _send(
    messaging: Messaging, customer_id: str, channel: str = "email", kind: str = "marketing"
) -> Message:
    request = MessageRequest(
        key=f"test/{uuid.uuid4().hex}",
        customer_id=customer_id,
        channels=[channel],
        template="cart_reminder_1" if kind == "marketing" else "order_shipped",
        kind=kind,
        context={**CART_CONTEXT, "order": SAMPLES["order"]},
        quiet_hours=None,
        frequency_cap=None,
    )
    result = await messaging.send(SendMessageInput(request=request))
    async with messaging.sessionmaker() as session:
        row = await session.get(Message, result.message_id)
    assert row is not None
    return row


async def _sendgrid(api: Api, events: list[dict[str, Any]], **sign: Any) -> Any:
    body = json.dumps(events).encode()
    return await api.http.post(
        "/v1/webhooks/sendgrid", content=body, headers=SIGNER.headers(body, **sign)
    )


def _event(row: Message, kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "email": row.to,
        "timestamp": int(time.time()),
        "event": kind,
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": "abc.filter0001",
        "sutra_message_id": str(row.id),
        **extra,
    }


async def _twilio(api: Api, path: str, params: dict[str, str], query: str = "") -> Any:
    url = f"{PUBLIC_URL}{path}{query}"
    return await api.http.post(
        path + query, content=urlencode(params), headers=twilio_headers(AUTH_TOKEN, url, params)
    )


async def _count(sessionmaker: async_sessionmaker[AsyncSession], model: Any, *where: Any) -> int:
    async with sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def _row(sessionmaker: async_sessionmaker[AsyncSession], message_id: Any) -> Message:
    async with sessionmaker() as session:
        row = await session.get(Message, message_id)
    assert row is not None
    return row


async def test_signed_sendgrid_events_move_the_ledger_forward_once(
    hooks: Api, messaging: Messaging, sessionmaker
):
    row = await _send(messaging, await _customer(hooks))
    delivered = _event(row, "delivered")

    first = await _sendgrid(hooks, [_event(row, "processed"), delivered, _event(row, "open")])
    again = await _sendgrid(hooks, [delivered])

    assert first.status_code == 200
    assert first.json() == {"received": 3, "applied": 3}
    assert again.json() == {"received": 1, "applied": 0}
    updated = await _row(sessionmaker, row.id)
    assert updated.status == "opened"
    assert updated.delivered_at is not None
    assert await _count(sessionmaker, MessageEvent, MessageEvent.message_id == row.id) == 3


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            lambda h: {**h, "X-Twilio-Email-Event-Webhook-Signature": "AAAA"}, id="bad-signature"
        ),
        pytest.param(
            lambda h: {k: v for k, v in h.items() if "Signature" not in k}, id="no-signature"
        ),
        pytest.param(
            lambda h: {**h, "X-Twilio-Email-Event-Webhook-Timestamp": str(int(time.time()) - 3600)},
            id="replayed-old",
        ),
    ],
)
async def test_unsigned_or_forged_sendgrid_webhooks_are_refused_and_change_nothing(
    hooks: Api, messaging: Messaging, sessionmaker, tamper: Any
):
    row = await _send(messaging, await _customer(hooks))
    body = json.dumps([_event(row, "bounce", type="bounce")]).encode()
    headers = tamper(SIGNER.headers(body))

    response = await hooks.http.post("/v1/webhooks/sendgrid", content=body, headers=headers)

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert (await _row(sessionmaker, row.id)).status == "sent"
    assert await _count(sessionmaker, MessageEvent, MessageEvent.message_id == row.id) == 0
    assert row.to is not None
    assert await _count(sessionmaker, Suppression, Suppression.address == row.to.lower()) == 0


async def test_a_signature_over_a_different_body_is_refused(hooks: Api, messaging, sessionmaker):
    row = await _send(messaging, await _customer(hooks))
    signed = json.dumps([_event(row, "delivered")]).encode()
    sent = json.dumps([_event(row, "bounce", type="bounce")]).encode()

    response = await hooks.http.post(
        "/v1/webhooks/sendgrid", content=sent, headers=SIGNER.headers(signed)
    )

    assert response.status_code == 401
    assert (await _row(sessionmaker, row.id)).status == "sent"


async def test_a_hard_bounce_stops_all_email_to_the_address(
    hooks: Api, messaging: Messaging, sessionmaker
):
    customer_id = await _customer(hooks, email=f"{uid('b')}@example.com")
    row = await _send(messaging, customer_id)

    await _sendgrid(hooks, [_event(row, "bounce", type="bounce", reason="550 no such user")])

    bounced = await _row(sessionmaker, row.id)
    assert bounced.status == "bounced"
    assert bounced.error_message == "550 no such user"
    marketing = await _send(messaging, customer_id)
    transactional = await _send(messaging, customer_id, kind="transactional")
    assert marketing.status == transactional.status == "suppressed"
    assert transactional.reason == "no channel can take it: email: suppressed (bounce)"


async def test_an_unsubscribe_event_stops_marketing_but_not_order_updates(
    hooks: Api, messaging: Messaging, sessionmaker
):
    customer_id = await _customer(hooks, email=f"{uid('u')}@example.com")
    row = await _send(messaging, customer_id)

    await _sendgrid(hooks, [_event(row, "unsubscribe")])

    assert (await _send(messaging, customer_id)).status == "suppressed"
    assert (await _send(messaging, customer_id, kind="transactional")).status == "sent"
    async with sessionmaker() as session:
        customer = await session.get(Customer, customer_id)
        assert customer is not None
        assert customer.consent_email is False
        sources = list(
            await session.scalars(
                select(ConsentChange.source).where(ConsentChange.customer_id == customer_id)
            )
        )
    assert "sendgrid_unsubscribe" in sources


async def test_twilio_status_callbacks_update_the_ledger_and_suppress_dead_numbers(
    hooks: Api, messaging: Messaging, sessionmaker
):
    phone = "+923001230005"
    customer_id = await _customer(hooks, phone=phone)
    row = await _send(messaging, customer_id, channel="sms")
    params = {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "MessageStatus": "undelivered",
        "ErrorCode": "30005",
        "AccountSid": ACCOUNT_SID,
        "To": phone,
    }

    response = await _twilio(
        hooks, "/v1/webhooks/twilio/status", params, query=f"?message_id={row.id}"
    )
    again = await _twilio(
        hooks, "/v1/webhooks/twilio/status", params, query=f"?message_id={row.id}"
    )

    assert response.status_code == again.status_code == 204
    failed = await _row(sessionmaker, row.id)
    assert (failed.status, failed.error_code) == ("failed", "30005")
    assert await _count(sessionmaker, MessageEvent, MessageEvent.message_id == row.id) == 1
    assert (
        await _send(messaging, customer_id, channel="sms", kind="transactional")
    ).status == "suppressed"


async def test_a_forged_twilio_callback_is_refused(hooks: Api, messaging, sessionmaker):
    # A number of its own: the factory's default may be suppressed by an earlier test.
    phone = f"+92300{uuid.uuid4().int % 10_000_000:07d}"
    row = await _send(messaging, await _customer(hooks, phone=phone), channel="sms")
    assert row.status == "sent"
    params = {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "MessageStatus": "failed",
        "ErrorCode": "30005",
    }
    headers = twilio_headers("not-the-token", f"{PUBLIC_URL}/v1/webhooks/twilio/status", params)

    response = await hooks.http.post(
        "/v1/webhooks/twilio/status", content=urlencode(params), headers=headers
    )

    assert response.status_code == 401
    assert (await _row(sessionmaker, row.id)).status == "sent"


async def test_stop_by_sms_ends_marketing_sms_and_leaves_email_alone(
    hooks: Api, messaging: Messaging, sessionmaker
):
    phone = "+923001230001"
    customer_id = await _customer(hooks, phone=phone)
    stop = {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "From": phone,
        "To": "+15005550006",
        "Body": "stop",
    }

    response = await _twilio(hooks, "/v1/webhooks/twilio/inbound", stop)

    assert response.status_code == 200
    assert "<Response>" in response.text
    sms = await _send(messaging, customer_id, channel="sms")
    assert sms.status == "suppressed"
    assert (await _send(messaging, customer_id, channel="email")).status == "sent"
    async with sessionmaker() as session:
        customer = await session.get(Customer, customer_id)
    assert customer is not None
    assert (customer.consent_sms, customer.consent_email) == (False, True)

    start = {**stop, "MessageSid": "SM" + uuid.uuid4().hex, "Body": "START"}
    await _twilio(hooks, "/v1/webhooks/twilio/inbound", start)

    assert (await _send(messaging, customer_id, channel="sms")).status == "sent"


async def test_replies_reach_the_customers_running_journeys(
    hooks: Api,
    hook_settings: Settings,
    dev_server: WorkflowEnvironment,
    sessionmaker: async_sessionmaker[AsyncSession],
):
    phone = "+923001230002"
    customer_id = await _customer(hooks, phone=phone)
    client: Client = dev_server.client
    async with build_worker(
        client,
        hook_settings.temporal_task_queue,
        sessionmaker,
        hook_settings,
        extra_workflows=[MessageTestWorkflow],
    ):
        handle = await client.start_workflow(
            MessageTestWorkflow.run,
            MessageTestInput(customer_id=customer_id, requests=[], linger=timedelta(minutes=5)),
            id=f"test-journey/{uuid.uuid4().hex[:8]}",
            task_queue=hook_settings.temporal_task_queue,
        )

        async def visible() -> bool:
            query = f'CustomerId = "{customer_id}" AND WorkflowId = "{handle.id}"'
            return bool([w async for w in client.list_workflows(query)])

        await eventually(visible, what="the journey to be searchable by customer")
        reply = {
            "MessageSid": "SM" + uuid.uuid4().hex,
            "From": f"whatsapp:{phone}",
            "To": "whatsapp:+14155238886",
            "Body": "Is it available in blue?",
        }
        await _twilio(hooks, "/v1/webhooks/twilio/inbound", reply)

        async def replies() -> list[InboundMessageSignal]:
            return await handle.query(MessageTestWorkflow.get_replies)

        [got] = await eventually(replies, what="the reply to reach the journey")
        assert (got.channel, got.body, got.keyword) == (
            "whatsapp",
            "Is it available in blue?",
            None,
        )
        await handle.terminate()
