"""The abandoned-cart journey over a week, on the time-skipping server: the default
sequence to the hour, a pause when the customer comes back, an order ending it and
taking the credit, a new rule version that running journeys never see."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from config.settings import Environment, Settings
from contracts.carts import CartState
from contracts.events import EVENT_ADAPTER
from contracts.rules import RuleDefinition
from db.models import (
    Attribution,
    Coupon,
    JourneyEntry,
    Message,
    TemplateOverride,
)
from services.customers.profiles import upsert_from_events
from services.intake.service import ingest
from services.journeys import rules
from tests.factories import cart_updated, item, order_placed, uid
from tests.skipping_shop import KARACHI, SkippingShop
from worker import build_worker
from workflows.cart import CartWorkflow
from workflows.journey_split import choose_variant, split_bucket

HOUR = timedelta(hours=1)
ACTOR = rules.Actor(key_id=None, name="tests")


class Shop(SkippingShop):
    """Carts of a shop on the time-skipping server."""

    async def cart(self, customer_id: str, cart_id: str | None = None, **values: Any) -> str:
        cart_id = cart_id or uid("cart")
        event = cart_updated(
            cart_id, customer_id=customer_id, occurred_at=_iso(await self.now()), **values
        )
        await self.send(event)
        return cart_id

    def handle(self, cart_id: str) -> WorkflowHandle[CartWorkflow, Any]:
        return self.env.client.get_workflow_handle_for(CartWorkflow.run, f"cart/{cart_id}")

    async def state(self, cart_id: str) -> CartState:
        return await self.handle(cart_id).query(CartWorkflow.state)

    async def messages(self, cart_id: str) -> list[Message]:
        async with self.sessionmaker() as session:
            rows = await session.scalars(
                select(Message)
                .where(Message.cart_id == cart_id, Message.status.in_(("sent", "delivered")))
                .order_by(Message.sent_at, Message.channel)
            )
            return list(rows)

    async def coupons(self, cart_id: str) -> list[Coupon]:
        async with self.sessionmaker() as session:
            rows = await session.scalars(
                select(Coupon).where(Coupon.cart_id == cart_id).order_by(Coupon.percent_off)
            )
            return list(rows)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
async def shop(
    time_skipping: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[Shop]:
    settings = Settings(
        env=Environment.test, database_url=database_url, temporal_task_queue=task_queue
    )
    shop = Shop(time_skipping, settings, sessionmaker)
    async with build_worker(time_skipping.client, task_queue, sessionmaker, settings):
        yield shop
    await shop.terminate_all()


async def _customer(shop: Shop) -> str:
    """A customer in Karachi who can be reached on every channel."""
    customer_id = uid("c")
    event = cart_updated(customer_id=customer_id, items=[], email=f"{customer_id}@example.com")
    parsed = EVENT_ADAPTER.validate_python(event)
    async with shop.sessionmaker() as session, session.begin():
        await upsert_from_events(session, [parsed])
    return customer_id


async def _rule(shop: Shop, customer_id: str, **changes: Any) -> str:
    """The default rule, active, for this test's customer only (tests share a database)."""
    definition = copy.deepcopy(rules.DEFAULT_ABANDONED_CART)
    definition.update(changes)
    definition["priority"] = 1
    definition["conditions"] = {"field": "customer.id", "op": "eq", "value": customer_id}
    async with shop.sessionmaker() as session, session.begin():
        rule, _ = await rules.create(
            session, RuleDefinition.model_validate(definition), ACTOR, status="active"
        )
        return rule.id


@pytest.fixture(autouse=True)
async def _whatsapp_content_template(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """The shop's approved WhatsApp template for step 2, so WhatsApp can be used outside
    the 24-hour window as in production."""
    async with sessionmaker() as session, session.begin():
        if await session.get(TemplateOverride, ("cart_reminder_2", "whatsapp", "en")) is None:
            session.add(
                TemplateOverride(
                    name="cart_reminder_2",
                    channel="whatsapp",
                    locale="en",
                    content={"content_sid": "HX" + "c3" * 16},
                    kind="marketing",
                    context=["cart", "coupon"],
                )
            )


def _offsets(messages: list[Message], start: datetime) -> list[tuple[str, str, timedelta]]:
    return [
        (m.channel or "", m.template, round_minutes(m.sent_at - start))  # type: ignore[operator]
        for m in messages
    ]


def round_minutes(delta: timedelta) -> timedelta:
    return timedelta(minutes=round(delta.total_seconds() / 60))


async def test_the_default_sequence_goes_out_on_time_with_growing_discounts(shop: Shop):
    customer_id = await _customer(shop)
    await _rule(shop, customer_id)
    start = await shop.at_local(10)  # 10:00 in Karachi: no step falls in quiet hours

    cart_id = await shop.cart(customer_id)
    await shop.env.sleep(timedelta(days=8))

    messages = await shop.messages(cart_id)
    assert _offsets(messages, start) == [
        ("email", "cart_reminder_1", 1 * HOUR),
        ("whatsapp", "cart_reminder_2", 24 * HOUR),
        ("email", "cart_reminder_3", 72 * HOUR),
        ("sms", "cart_reminder_3", 72 * HOUR),
        ("email", "cart_reminder_4", 168 * HOUR),
    ]
    assert [m.coupon_code is not None for m in messages] == [False, True, True, True, True]
    assert messages[2].coupon_code == messages[3].coupon_code  # one code for both channels
    coupons = await shop.coupons(cart_id)
    assert [(c.percent_off, c.status) for c in coupons] == [
        (5, "revoked"),
        (10, "revoked"),
        (15, "active"),
    ]
    assert {c.code for c in coupons} == {m.coupon_code for m in messages if m.coupon_code}
    assert messages[1].details["whatsapp_content_sid"] == "HX" + "c3" * 16
    assert all(m.rule_version == 1 for m in messages)
    state = await shop.state(cart_id)
    assert state.journey is not None
    assert state.journey.exit_reason == "completed"


async def test_an_order_after_step_two_ends_the_journey_and_takes_the_credit(shop: Shop):
    customer_id = await _customer(shop)
    rule_id = await _rule(shop, customer_id)
    await shop.at_local(10)
    cart_id = await shop.cart(customer_id, items=[item("SKU1", 2, "4500.00")])
    await shop.env.sleep(25 * HOUR)
    [first, second] = await shop.messages(cart_id)

    order = order_placed(
        cart_id=cart_id,
        customer_id=customer_id,
        occurred_at=_iso(await shop.now()),
        total="8550.00",
    )
    order["data"]["items"] = [item("SKU1", 2, "4500.00")]
    order["data"]["coupon_code"] = second.coupon_code
    await shop.send(order)
    result = await shop.handle(cart_id).result()
    await shop.env.sleep(timedelta(days=7))

    assert result.status == "converted"
    assert len(await shop.messages(cart_id)) == 2  # steps 3 and 4 never went out
    async with shop.sessionmaker() as session:
        credit = await session.get(Attribution, order["data"]["order_id"])
        entry = await session.scalar(
            select(JourneyEntry).where(JourneyEntry.workflow_id == f"cart/{cart_id}")
        )
    assert credit is not None
    assert credit.message_id == second.id
    assert (credit.rule_id, credit.step) == (rule_id, "2")
    assert str(credit.revenue) == "8550.0000"
    assert str(credit.discount) == "450.0000"  # 5% of 9,000.00
    assert entry is not None
    assert entry.exit_reason == "converted"
    assert first.template == "cart_reminder_1"


async def test_activity_on_the_cart_pauses_and_the_journey_resumes_without_repeats(shop: Shop):
    customer_id = await _customer(shop)
    await _rule(shop, customer_id)
    no_whatsapp = {"email": True, "sms": True, "whatsapp": False}
    start = await shop.at_local(9)
    cart_id = await shop.cart(customer_id, consent=no_whatsapp)
    await shop.env.sleep(5 * HOUR)

    # Back at 5 h with a new item: the journey holds until the cart is idle again (6 h),
    # then the interrupted 23 h wait starts over.
    more = [item("SKU1"), item("SKU7", 1, "1800.00")]
    await shop.cart(customer_id, cart_id, items=more, consent=no_whatsapp)
    assert (await shop.state(cart_id)).status == "active"
    await shop.env.sleep(30 * HOUR)

    messages = await shop.messages(cart_id)
    assert _offsets(messages, start) == [
        ("email", "cart_reminder_1", 1 * HOUR),
        ("email", "cart_reminder_2", 29 * HOUR),
    ]
    assert messages[1].body is not None
    assert "Rs6,300.00" in messages[1].body  # the latest total, not the one at step 1
    assert messages[0].body is not None
    assert "Rs4,500.00" in messages[0].body


async def test_a_new_version_applies_to_new_carts_only(shop: Shop):
    customer_id = await _customer(shop)
    rule_id = await _rule(shop, customer_id)
    await shop.at_local(10)
    old_cart = await shop.cart(customer_id)
    await shop.env.sleep(2 * HOUR)

    v2 = copy.deepcopy(rules.DEFAULT_ABANDONED_CART)
    v2["priority"] = 1
    v2["conditions"] = {"field": "customer.id", "op": "eq", "value": customer_id}
    v2["steps"] = [{"send": {"channels": ["sms"], "template": "cart_reminder_1"}}]
    async with shop.sessionmaker() as session, session.begin():
        await rules.update(session, rule_id, RuleDefinition.model_validate(v2), ACTOR)
    new_cart = await shop.cart(customer_id)
    await shop.env.sleep(timedelta(days=8))

    old = await shop.messages(old_cart)
    new = await shop.messages(new_cart)
    assert [m.template for m in old] == [
        "cart_reminder_1",
        "cart_reminder_2",
        "cart_reminder_3",
        "cart_reminder_3",
        "cart_reminder_4",
    ]
    assert {m.rule_version for m in old} == {1}
    assert [(m.template, m.channel, m.rule_version) for m in new] == [("cart_reminder_1", "sms", 2)]


async def test_emptying_the_cart_ends_the_journey(shop: Shop):
    customer_id = await _customer(shop)
    await _rule(shop, customer_id)
    await shop.at_local(10)
    cart_id = await shop.cart(customer_id)
    await shop.env.sleep(2 * HOUR)

    await shop.cart(customer_id, cart_id, items=[])
    await shop.env.sleep(timedelta(days=8))

    assert len(await shop.messages(cart_id)) == 1
    state = await shop.state(cart_id)
    assert state.journey is not None
    assert state.journey.exit_reason == "emptied"


async def test_a_customer_who_withdrew_every_consent_leaves_the_journey(shop: Shop):
    customer_id = await _customer(shop)
    await _rule(shop, customer_id)
    await shop.at_local(10)
    cart_id = await shop.cart(customer_id)
    await shop.env.sleep(2 * HOUR)

    # Consent withdrawn everywhere (the event changes no cart contents).
    withdrawn = cart_updated(
        uid("other-cart"),
        customer_id=customer_id,
        occurred_at=_iso(await shop.now()),
        consent={"email": False, "sms": False, "whatsapp": False},
        items=[],
    )
    parsed = EVENT_ADAPTER.validate_python(withdrawn)
    received_at = await shop.now()
    async with shop.sessionmaker() as session, session.begin():
        await ingest(
            session, [parsed], settings=shop.settings, api_key_id=None, received_at=received_at
        )
    await shop.env.sleep(timedelta(days=2))

    assert len(await shop.messages(cart_id)) == 1
    state = await shop.state(cart_id)
    assert state.journey is not None
    assert state.journey.exit_reason == "unsubscribed"


async def test_a_coupon_whose_message_did_not_go_out_is_revoked(shop: Shop):
    customer_id = await _customer(shop)
    await _rule(
        shop,
        customer_id,
        steps=[
            {
                "send": {
                    "channels": ["sms"],
                    "template": "cart_reminder_2",
                    "incentive": {"percent_off": 5},
                }
            }
        ],
    )
    # No SMS consent: the step is suppressed, so its coupon must not stay usable.
    await shop.at_local(10)
    cart_id = await shop.cart(customer_id, consent={"email": True, "sms": False, "whatsapp": True})
    await shop.env.sleep(3 * HOUR)

    [coupon] = await shop.coupons(cart_id)
    assert (coupon.status, coupon.revoke_reason) == ("revoked", "its message did not go out")
    assert await shop.messages(cart_id) == []


def test_split_assignment_is_stable_and_close_to_its_weights():
    variants = [(50, 10, "a"), (50, 20, "b")]
    names = [choose_variant(variants, split_bucket("rule_x", f"c{i}"))[1] for i in range(10_000)]

    assert abs(names.count("a") / 10_000 - 0.5) <= 0.02
    assert names == [
        choose_variant(variants, split_bucket("rule_x", f"c{i}"))[1] for i in range(10_000)
    ]


async def test_wait_until_sends_at_the_customers_local_hour(shop: Shop):
    customer_id = await _customer(shop)
    await _rule(
        shop,
        customer_id,
        quiet_hours=None,
        steps=[
            {"send": {"channels": ["email"], "template": "cart_reminder_1"}},
            {"wait": "PT2H"},
            {"wait_until": "10:00"},
            {"send": {"channels": ["sms"], "template": "cart_reminder_1"}},
        ],
    )
    start = await shop.at_local(20)  # 20:00 in Karachi

    cart_id = await shop.cart(customer_id)
    await shop.env.sleep(timedelta(days=2))

    first, second = await shop.messages(cart_id)
    assert first.sent_at is not None
    assert second.sent_at is not None
    assert round_minutes(first.sent_at - start) == HOUR
    local = second.sent_at.astimezone(KARACHI)
    assert (local.hour, local.minute) == (10, 0)
    assert local.date() == (start + timedelta(days=1)).astimezone(KARACHI).date()


async def test_an_order_during_the_night_ends_a_reminder_waiting_for_morning(shop: Shop):
    """The first reminder falls due at 21:30, inside the customer's quiet hours, and waits
    for 09:00; the customer orders at 23:00. The journey ends then, and the waiting
    reminder is given up (its ledger row says why), not sent in the morning."""
    customer_id = await _customer(shop)
    await _rule(shop, customer_id)
    await shop.at_local(20)
    await shop.env.sleep(timedelta(minutes=30))
    cart_id = await shop.cart(customer_id)
    await shop.env.sleep(timedelta(hours=2))  # 22:30: the reminder is waiting for 09:00
    async with shop.sessionmaker() as session:
        [waiting] = (await session.scalars(select(Message).where(Message.cart_id == cart_id))).all()
    assert (waiting.status, waiting.template) == ("queued", "cart_reminder_1")
    assert waiting.deferred_until is not None
    assert waiting.deferred_until.astimezone(KARACHI).hour == 9

    await shop.env.sleep(timedelta(minutes=30))
    ordered_at = await shop.now()
    await shop.send(
        order_placed(cart_id=cart_id, customer_id=customer_id, occurred_at=_iso(ordered_at))
    )
    result = await shop.handle(cart_id).result()
    ended = await shop.now()
    await shop.env.sleep(timedelta(hours=12))  # past 09:00

    assert result.status == "converted"
    assert ended - ordered_at < HOUR  # at once, not at 09:00
    assert await shop.messages(cart_id) == []
    async with shop.sessionmaker() as session:
        row = await session.get(Message, waiting.id)
    assert row is not None
    assert (row.status, row.reason) == ("suppressed", "the journey ended before it could go out")
    state = await shop.state(cart_id)
    assert state.journey is not None
    assert state.journey.exit_reason == "converted"
