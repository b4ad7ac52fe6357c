"""POST /v1/messages/{id}/resend and the unfiltered ledger listing, with email through the
fake SendGrid: a failed message re-sent once (asking again answers the same re-send), a
bounced one whose address is suppressed stays unsent, anything else is a 409."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from channels import build_adapters
from config.settings import Settings
from contracts.messages import MessageRequest, SendMessageInput
from db.models import Message
from services.messaging.provider_events import apply_sendgrid_events
from services.messaging.send import Messaging
from tests.conftest import ADMIN_KEY, Api, auth, make_settings, start_api
from tests.factories import CART_CONTEXT, cart_updated, uid
from tests.providers.fake_sendgrid import FakeSendGrid


@pytest.fixture
def mail_settings(
    database_url: str, dev_server: WorkflowEnvironment, task_queue: str, fake_sendgrid: FakeSendGrid
) -> Settings:
    return make_settings(
        database_url,
        dev_server.client.service_client.config.target_host,
        task_queue,
        sendgrid_api_key=fake_sendgrid.api_key,
        sendgrid_host=fake_sendgrid.url,
        email_from="shop@shop.example",
    )


@pytest.fixture
async def mail_api(mail_settings: Settings) -> AsyncIterator[Api]:
    api, manager = await start_api(mail_settings)
    yield api
    await api.http.aclose()
    await manager.__aexit__(None, None, None)


async def _customer(api: Api) -> tuple[str, str]:
    event = cart_updated(customer_id=uid("c"))
    email = f"{event['customer']['id']}@example.com"
    event["customer"]["email"] = email
    assert (await api.post_event(event)).status_code == 202
    return event["customer"]["id"], email


async def _send(messaging: Messaging, customer_id: str, step: str) -> uuid.UUID:
    request = MessageRequest(
        key=f"journey/rule_resend/{customer_id}/{step}",
        customer_id=customer_id,
        channels=["email"],
        template="cart_reminder_1",
        context=CART_CONTEXT,
        quiet_hours=None,
        frequency_cap=None,
        cap_policy="skip",
        rule_id="rule_resend",
        rule_version=2,
        step=step,
        cart_id="cart_resend",
    )
    result = await messaging.send(SendMessageInput(request=request))
    assert result.message_id is not None
    return result.message_id


async def _resend(api: Api, message_id: object) -> httpx.Response:
    return await api.http.post(f"/v1/messages/{message_id}/resend", headers=auth(ADMIN_KEY))


async def _row(sessionmaker: async_sessionmaker[AsyncSession], message_id: Any) -> Message:
    async with sessionmaker() as session:
        row = await session.get(Message, uuid.UUID(str(message_id)))
    assert row is not None
    return row


async def test_a_failed_message_is_resent_once_as_a_new_linked_message(
    mail_api: Api,
    mail_settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_sendgrid: FakeSendGrid,
):
    customer_id, email = await _customer(mail_api)
    messaging = Messaging(mail_settings, sessionmaker, build_adapters(mail_settings))
    fake_sendgrid.fail_next(403, {"errors": [{"message": "sender not verified"}]}, to=email)
    failed_id = await _send(messaging, customer_id, "0")
    failed = await _row(sessionmaker, failed_id)
    assert failed.status == "failed"
    assert fake_sendgrid.sent_to(email) == []

    first = await _resend(mail_api, failed_id)

    assert first.status_code == 201, first.text
    assert first.json()["created"] is True
    resent = first.json()["message"]
    assert resent["id"] != str(failed_id)
    assert resent["resend_of"] == str(failed_id)
    assert resent["key"] == f"{failed.key}/resend#0"
    assert (resent["status"], resent["channel"], resent["to"]) == ("sent", "email", email)
    assert (resent["subject"], resent["body"]) == (failed.subject, failed.body)
    assert (resent["rule_id"], resent["rule_version"], resent["step"]) == ("rule_resend", 2, "0")
    assert len(fake_sendgrid.sent_to(email)) == 1

    second = await _resend(mail_api, failed_id)
    assert second.status_code == 200
    assert second.json() == {**first.json(), "created": False}
    assert len(fake_sendgrid.sent_to(email)) == 1
    assert (await _row(sessionmaker, failed_id)).status == "failed"  # the old row stays
    listed = (await mail_api.get(f"/v1/messages?customer_id={customer_id}")).json()["messages"]
    assert [(m["id"], m["resend_of"], m["resent_as"]) for m in listed] == [
        (resent["id"], str(failed_id), None),
        (str(failed_id), None, resent["id"]),
    ]
    audit = (await mail_api.get(f"/v1/audit?entity=message&entity_id={failed_id}")).json()
    assert [(e["action"], e["details"]["resent_as"]) for e in audit["entries"]] == [
        ("resend", resent["id"])
    ]


async def test_a_bounced_message_to_a_suppressed_address_is_not_sent_again(
    mail_api: Api,
    mail_settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_sendgrid: FakeSendGrid,
):
    customer_id, email = await _customer(mail_api)
    messaging = Messaging(mail_settings, sessionmaker, build_adapters(mail_settings))
    sent_id = await _send(messaging, customer_id, "0")
    sent = await _row(sessionmaker, sent_id)
    assert sent.status == "sent"
    refused = await _resend(mail_api, sent_id)
    assert refused.status_code == 409
    assert (refused.json()["error"], refused.json()["current_status"]) == ("conflict", "sent")

    async with sessionmaker() as session, session.begin():
        bounce = {
            "email": email,
            "timestamp": int(time.time()),
            "event": "bounce",
            "type": "bounce",
            "reason": "550 5.1.1 mailbox does not exist",
            "sg_event_id": uuid.uuid4().hex,
            "sg_message_id": f"{sent.provider_message_id}.filter0001",
            "sutra_message_id": str(sent_id),
        }
        assert await apply_sendgrid_events(session, [bounce]) == 1
    assert (await _row(sessionmaker, sent_id)).status == "bounced"

    response = await _resend(mail_api, sent_id)

    assert response.status_code == 201, response.text
    resent = response.json()["message"]
    assert resent["resend_of"] == str(sent_id)
    assert resent["status"] == "suppressed"
    assert "suppress" in (resent["reason"] or "")
    assert len(fake_sendgrid.sent_to(email)) == 1  # only the original
    assert (await _resend(mail_api, uuid.uuid4())).status_code == 404
    assert (await mail_api.http.post("/v1/messages/x/resend", headers=auth(ADMIN_KEY))).json()[
        "fields"
    ][0]["loc"] == ["path", "message_id"]


async def test_the_ledger_without_filters_lists_the_newest_messages(
    mail_api: Api, mail_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
):
    customer_id, _ = await _customer(mail_api)
    messaging = Messaging(mail_settings, sessionmaker, build_adapters(mail_settings))
    ids = [str(await _send(messaging, customer_id, str(step))) for step in range(3)]

    newest = (await mail_api.get("/v1/messages?limit=2")).json()

    assert [m["id"] for m in newest["messages"]] == ids[::-1][:2]
    older = (await mail_api.get(f"/v1/messages?limit=2&cursor={newest['next_cursor']}")).json()
    assert older["messages"][0]["id"] == ids[0]
