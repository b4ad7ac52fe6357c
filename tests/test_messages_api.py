"""GET /v1/messages: the ledger as ops and marketers read it."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels import build_adapters
from config.settings import Settings
from contracts.messages import MessageRequest, SendMessageInput
from services.messaging.send import Messaging
from tests.conftest import ADMIN_KEY, Api, auth
from tests.factories import CART_CONTEXT, cart_updated, uid


async def _send(
    messaging: Messaging, customer_id: str, step: str, **overrides: object
) -> SendMessageInput:
    request = MessageRequest(
        key=f"journey/rule_1/{customer_id}/{step}",
        customer_id=customer_id,
        channels=["email"],
        template="cart_reminder_1",
        context=CART_CONTEXT,
        quiet_hours=None,
        rule_id="rule_1",
        rule_version=3,
        step=step,
        cart_id="cart_ledger",
        coupon_code="SAVE5-XYZ",
        **overrides,
    )
    send = SendMessageInput(request=request)
    await messaging.send(send)
    return send


async def test_the_ledger_lists_a_customers_messages_newest_first(
    api: Api, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
):
    event = cart_updated(customer_id=uid("c"))
    await api.post_event(event)
    customer_id = event["customer"]["id"]
    messaging = Messaging(settings, sessionmaker, build_adapters(settings))
    await _send(messaging, customer_id, "1")
    await _send(messaging, customer_id, "2", frequency_cap=None, cap_policy="skip")

    response = await api.get(f"/v1/messages?customer_id={customer_id}")

    assert response.status_code == 200
    messages = response.json()["messages"]
    assert [m["step"] for m in messages] == ["2", "1"]
    sent, capped = messages[1], messages[0]
    assert sent["status"] == "sent"
    assert sent["channel"] == "email"
    assert sent["to"] == "ayesha@example.com"
    assert sent["template"] == "cart_reminder_1"
    assert sent["subject"] == "Forgot something? Your cart is waiting!"
    assert "Lawn suit" in sent["body"]
    assert (sent["rule_id"], sent["rule_version"], sent["coupon_code"]) == (
        "rule_1",
        3,
        "SAVE5-XYZ",
    )
    assert sent["provider"] == "outbox"
    assert (capped["status"], capped["reason"]) == ("suppressed", "frequency_cap")
    by_cart = (await api.get("/v1/messages?cart_id=cart_ledger&rule_id=rule_1")).json()
    assert {m["customer_id"] for m in by_cart["messages"]} >= {customer_id}


async def test_the_ledger_pages_without_losing_rows(
    api: Api, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
):
    event = cart_updated(customer_id=uid("c"))
    await api.post_event(event)
    customer_id = event["customer"]["id"]
    messaging = Messaging(settings, sessionmaker, build_adapters(settings))
    for step in range(5):
        await _send(messaging, customer_id, str(step), cap_policy="skip")

    seen: list[str] = []
    cursor = None
    while True:
        query = f"/v1/messages?customer_id={customer_id}&limit=2"
        page = (await api.get(query + (f"&cursor={cursor}" if cursor else ""))).json()
        seen += [m["step"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert sorted(seen) == ["0", "1", "2", "3", "4"]
    garbage = await api.get(f"/v1/messages?customer_id={customer_id}&cursor=nonsense")
    assert garbage.status_code == 422


async def test_the_ledger_needs_the_ops_scope(api: Api):
    assert (await api.get("/v1/messages")).status_code == 200
    marketer = (
        await api.http.post(
            "/v1/api-keys",
            json={"name": "m", "scopes": ["rules:read"]},
            headers=auth(ADMIN_KEY),
        )
    ).json()["key"]
    assert (await api.get("/v1/messages?customer_id=x", key=marketer)).status_code == 403
