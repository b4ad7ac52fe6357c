"""Rule analytics count what the send policy really decided: messages sent through the
real messaging service (outbox channels) are suppressed for each reason, held for quiet
hours, abandoned, and unsubscribed from through the link they carried."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels import build_adapters
from config.settings import Settings
from contracts.messages import MessageRequest, SendMessageInput, SendMessageResult
from db.models import Message
from services.messaging.send import Messaging
from services.messaging.unsubscribe import unsubscribe_url
from tests.conftest import ADMIN_KEY, Api, auth
from tests.factories import CART_CONTEXT, cart_updated, uid

KARACHI = ZoneInfo("Asia/Karachi")
RULE = {
    "name": "Policy reasons",
    "trigger": {"event": "cart.abandoned", "after": "PT1H"},
    "conditions": {"field": "customer.id", "op": "eq", "value": "nobody"},
    "steps": [
        {"send": {"channels": ["email"], "template": "cart_reminder_1"}},
        {"wait": "PT1H"},
        {"send": {"channels": ["email"], "template": "cart_reminder_1"}},
    ],
}


async def _customer(api: Api, **overrides: Any) -> str:
    customer_id = uid("c")
    values: dict[str, Any] = {"email": f"{customer_id}@example.com", "phone": None}
    values.update(overrides)
    response = await api.post_event(cart_updated(customer_id=customer_id, **values))
    assert response.status_code == 202, response.text
    return customer_id


class Sender:
    def __init__(self, messaging: Messaging, rule_id: str) -> None:
        self.messaging = messaging
        self.rule_id = rule_id

    async def send(
        self, customer_id: str, step: str, now: datetime | None = None, **overrides: Any
    ) -> tuple[SendMessageInput, SendMessageResult]:
        values: dict[str, Any] = {
            "key": f"journey/{self.rule_id}/{customer_id}/{step}",
            "customer_id": customer_id,
            "channels": ["email"],
            "template": "cart_reminder_1",
            "context": CART_CONTEXT,
            "quiet_hours": None,
            "rule_id": self.rule_id,
            "rule_version": 1,
            "step": step,
        }
        values.update(overrides)
        send = SendMessageInput(request=MessageRequest(**values))
        return send, await self.messaging.send(send, now)


async def test_each_policy_decision_is_counted_under_its_reason(
    api: Api, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
):
    created = await api.http.post("/v1/rules", json=RULE, headers=auth(ADMIN_KEY))
    assert created.status_code == 201, created.text
    rule_id = created.json()["id"]
    sender = Sender(Messaging(settings, sessionmaker, build_adapters(settings)), rule_id)

    reached = await _customer(api)
    _, sent = await sender.send(reached, "0")
    _, capped = await sender.send(reached, "2", cap_policy="skip")
    refused = await _customer(
        api, phone="+923001112233", consent={"email": False, "sms": False, "whatsapp": False}
    )
    _, no_consent = await sender.send(refused, "0", channels=["email", "sms"])
    unreachable = await _customer(api, email=None)
    _, no_address = await sender.send(unreachable, "0")
    sleeper = await _customer(api, timezone="Asia/Karachi")
    local_night = datetime.now(UTC).astimezone(KARACHI).replace(hour=23, minute=0)
    night_send, held = await sender.send(
        sleeper, "0", now=local_night.astimezone(UTC), quiet_hours="default"
    )
    assert [r.status for r in (sent, capped, no_consent, no_address, held)] == [
        "sent",
        "suppressed",
        "suppressed",
        "suppressed",
        "deferred",
    ]
    async with sessionmaker() as session:
        codes = [
            (await session.get(Message, r.message_id)).details.get("suppressed")  # type: ignore[union-attr]
            for r in (capped, no_consent, no_address)
        ]
    assert codes == ["frequency_cap", "consent", "no_channel"]

    before = (await api.get(f"/v1/analytics/rules/{rule_id}")).json()["totals"]
    assert before["deferred"] == {"quiet_hours": 1, "frequency_cap": 0}
    assert before["suppressed"] == {
        "consent": 1,
        "no_channel": 1,
        "frequency_cap": 1,
        "abandoned": 0,
    }

    # The journey ends while the message waits for morning; the customer who got the
    # first message unsubscribes through its link.
    await sender.messaging.abandon(night_send.ledger_key, "journey ended")
    link = unsubscribe_url(
        settings, customer_id=reached, channel="email", message_id=sent.message_id
    )
    response = await api.http.post(link.removeprefix(settings.public_url))
    assert response.status_code == 200, response.text

    after = (await api.get(f"/v1/analytics/rules/{rule_id}")).json()
    totals = after["totals"]
    assert totals["suppressed"]["abandoned"] == 1
    assert totals["deferred"]["quiet_hours"] == 1  # held once, whatever came of it
    assert (totals["sent"], totals["recipients"], totals["unsubscribes"]) == (1, 1, 1)
    first = after["versions"][0]["variants"][0]["steps"][0]
    assert first["step"] == "0"
    assert first["channels"]["email"]["unsubscribes"] == 1
    assert first["channels"]["none"]["suppressed"]["consent"] == 1
    assert (
        after["versions"][0]["variants"][0]["steps"][1]["channels"]["email"]["suppressed"][
            "frequency_cap"
        ]
        == 1
    )
