"""Ops pausing, resuming and ending an abandoned-cart journey (services/journeys/controls.py)
on the time-skipping server: nothing goes out while paused, the waits keep their clock, an
end exits with ``ended_by_ops`` and the cart's workflow goes on; the journey's search
attributes say where it is."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.api.enums.v1 import EventType

from contracts import search_attributes as sa
from contracts.errors import Conflict
from db.models import JourneyEntry, Message
from services.journeys import controls
from tests import test_cart_journey as carts
from tests.factories import eventually
from tests.test_cart_journey import HOUR, Shop, _customer, _offsets, _rule

# The cart tests' fixtures: a shop on the time-skipping server, the WhatsApp template.
shop = carts.shop
whatsapp_content_template = carts._whatsapp_content_template

MINUTE = timedelta(minutes=1)
NO_WHATSAPP = {"email": True, "sms": True, "whatsapp": False}


async def _control(shop: Shop, cart_id: str, action: controls.Action) -> controls.Controlled:
    return await controls.control(
        shop.env.client, f"cart/{cart_id}", action, by="tests", rpc_timeout=timedelta(seconds=30)
    )


async def _attributes(shop: Shop, cart_id: str) -> dict[str, object]:
    description = await shop.handle(cart_id).describe()
    ours = {key.name for key in sa.ALL}
    return {
        pair.key.name: pair.value
        for pair in description.typed_search_attributes
        if pair.key.name in ours
    }


async def _diagnosis(shop: Shop, cart_id: str) -> str:
    """What a failure needs: every ledger row of the cart and the workflow's pending work."""
    async with shop.sessionmaker() as session:
        rows = await session.scalars(
            select(Message).where(Message.cart_id == cart_id).order_by(Message.created_at)
        )
        ledger = [
            f"{m.key} {m.channel} {m.status} sent_at={m.sent_at} reason={m.reason}"
            f" deferred_until={m.deferred_until} details={m.details}"
            for m in rows
        ]
    description = await shop.handle(cart_id).describe()
    pending = [
        f"{a.activity_type.name} attempt={a.attempt} state={a.state} last_failure={a.last_failure}"
        for a in description.raw_description.pending_activities
    ]
    events = [
        f"{e.event_id} {e.event_time.ToDatetime()} {EventType.Name(e.event_type)}"
        async for e in shop.handle(cart_id).fetch_history_events()
    ][-25:]
    now = await shop.now()
    return "\n".join(["server now " + str(now), *ledger, *pending, *events])


async def test_a_paused_cart_journey_holds_its_steps_and_ops_can_end_it(shop: Shop):
    customer_id = await _customer(shop)
    rule_id = await _rule(shop, customer_id)
    start = await shop.at_local(10)
    cart_id = await shop.cart(customer_id, consent=NO_WHATSAPP)
    await shop.env.sleep(2 * HOUR)
    assert _offsets(await shop.messages(cart_id), start) == [("email", "cart_reminder_1", HOUR)]

    paused = await _control(shop, cart_id, "pause")

    assert (paused.workflow_type, paused.result.status) == ("CartWorkflow", "paused")
    assert await _attributes(shop, cart_id) == {
        "CustomerId": customer_id,
        "CartId": cart_id,
        "RuleId": rule_id,
        "RuleVersion": 1,
        "JourneyStatus": "paused",
    }
    journey = (await shop.state(cart_id)).journey
    assert journey is not None
    assert journey.paused
    # The 24 h step falls due at 24 h, while paused: nothing goes out.
    await shop.env.sleep(28 * HOUR)
    assert len(await shop.messages(cart_id)) == 1

    resumed = await _control(shop, cart_id, "resume")
    assert resumed.result.status == "running"
    await shop.env.sleep(MINUTE)
    # The step that fell due goes out at once (30 h), and the next wait, 48 h after it in
    # the rule, counts from that send: 78 h, not 72 h.
    await shop.env.sleep(48 * HOUR)

    async def four() -> list[Any] | None:
        # The sends run in real time while the server's clock skips: wait for them.
        found = await shop.messages(cart_id)
        return found if len(found) >= 4 else None

    try:
        found = await eventually(four, what="the 78 h step's two sends")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await _diagnosis(shop, cart_id)}") from None
    assert _offsets(found, start) == [
        ("email", "cart_reminder_1", HOUR),
        ("email", "cart_reminder_2", 30 * HOUR),
        ("email", "cart_reminder_3", 78 * HOUR),
        ("sms", "cart_reminder_3", 78 * HOUR),
    ]
    assert (await _attributes(shop, cart_id))["JourneyStatus"] == "abandoned"

    ended = await _control(shop, cart_id, "end")

    assert (ended.result.status, ended.result.exit_reason) == ("ended", "ended_by_ops")
    await shop.env.sleep(5 * 24 * HOUR)
    assert len(await shop.messages(cart_id)) == 4  # the 7-day step never goes out
    state = await shop.state(cart_id)
    assert state.journey is not None
    assert (state.journey.exit_reason, state.journey.ended_by) == ("ended_by_ops", "tests")
    assert state.status == "abandoned"  # the cart's workflow still remembers the cart
    async with shop.sessionmaker() as session:
        entry = await session.scalar(
            select(JourneyEntry).where(JourneyEntry.workflow_id == f"cart/{cart_id}")
        )
    assert entry is not None
    assert entry.exit_reason == "ended_by_ops"
    again = await _control(shop, cart_id, "end")
    assert again.result.exit_reason == "ended_by_ops"
    with pytest.raises(Conflict, match="has ended"):
        await _control(shop, cart_id, "pause")
    assert (await shop.handle(cart_id).describe()).typed_search_attributes.get(sa.RULE_VERSION) == 1
