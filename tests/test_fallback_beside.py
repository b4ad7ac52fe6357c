"""A step sent on one of several channels is watched for a bounce beside the journey, not
inside it: the next steps go out when the rule says, a bounce still sends the step on the
next channel, an exit ends the watch, and the outbox (which never reports) is not watched.

On the time-skipping server with the real SDKs against the fake SendGrid and Twilio; the
send times are the ledger's ``sent_at``, the server's clock when each send was scheduled.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from config.settings import Environment, Settings
from contracts import workflow_ids
from contracts.messages import CHANNELS
from contracts.rules import RuleDefinition
from db.models import Customer, JourneyEntry, Message, TemplateOverride
from services.journeys import rules
from services.messaging.suppressions import set_consent
from tests.factories import cart_updated, customer, order_placed, uid
from tests.provider_reports import (
    ledger,
    reachable_customer,
    report_undelivered,
    reporting_settings,
)
from tests.providers.fake_sendgrid import FakeSendGrid
from tests.providers.fake_twilio import FakeTwilio
from tests.skipping_shop import SkippingShop
from worker import build_worker
from workflows.cart import CartWorkflow

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# The journey's own waits are exact; a send lands a few activity round trips after its
# timer fires (real time, which the server's clock keeps while the worker is busy).
TOLERANCE = SECOND
# A reaction to a report or an order, which the test sends between skips, while the
# server's clock runs at real pace: a busy machine may take seconds, not the 10 minutes
# a watch would have held the journey.
AT_ONCE = 10 * SECOND
ACTOR = rules.Actor(key_id=None, name="tests")


class Journeys(SkippingShop):
    """Welcome journeys of one customer each, on a rule of the test's own."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.rules: list[str] = []

    async def rule(self, customer_id: str, *steps: dict[str, Any]) -> str:
        definition = RuleDefinition.model_validate(
            {
                "name": "welcome on every channel",
                "trigger": {"event": "customer.created"},
                "conditions": {"field": "customer.id", "op": "eq", "value": customer_id},
                "steps": list(steps),
                "exit": {"events": ["order.placed", "unsubscribed"], "order_scope": "customer"},
                "quiet_hours": None,
            }
        )
        async with self.sessionmaker() as session, session.begin():
            rule, _ = await rules.create(session, definition, ACTOR, status="active")
        self.rules.append(rule.id)
        return rule.id

    async def start(self, *steps: dict[str, Any]) -> tuple[str, str]:
        """A reachable customer signs up; their journey's workflow id and phone number."""
        customer_id, phone = await reachable_customer(self, await self.now())
        rule_id = await self.rule(customer_id, *steps)
        at = await self.now()
        await self.send(
            {
                "id": uid("evt"),
                "type": "customer.created",
                "occurred_at": _iso(at),
                "customer": self.profile(customer_id, phone),
                "data": {},
            }
        )
        return workflow_ids.journey(rule_id, customer_id), phone

    def profile(self, customer_id: str, phone: str) -> dict[str, Any]:
        return customer(customer_id, email=f"{customer_id}@example.com", phone=phone)

    async def order(self, customer_id: str, phone: str) -> None:
        event = order_placed(
            cart_id=None, customer_id=customer_id, occurred_at=_iso(await self.now())
        )
        event["customer"] = self.profile(customer_id, phone)
        await self.send(event)

    async def unsubscribe(self, customer_id: str) -> None:
        async with self.sessionmaker() as session, session.begin():
            row = await session.get(Customer, customer_id)
            assert row is not None
            for channel in CHANNELS:
                await set_consent(
                    session, customers=[row], channel=channel, granted=False, source="tests"
                )

    async def sent(self, workflow_id: str) -> list[Message]:
        return [m for m in await ledger(self, workflow_id) if m.sent_at is not None]

    async def entry(self, workflow_id: str) -> JourneyEntry:
        async with self.sessionmaker() as session:
            entry = await session.scalar(
                select(JourneyEntry).where(JourneyEntry.workflow_id == workflow_id)
            )
        assert entry is not None
        return entry

    async def archive_rules(self) -> None:
        async with self.sessionmaker() as session, session.begin():
            for rule_id in self.rules:
                await rules.transition(session, rule_id, "archived", ACTOR)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def send(*channels: str) -> dict[str, Any]:
    return {"send": {"channels": list(channels), "template": "welcome"}}


def wait(duration: str) -> dict[str, Any]:
    return {"wait": duration}


def at(message: Message) -> datetime:
    assert message.sent_at is not None, f"{message.key} did not go out"
    return message.sent_at


def offsets(messages: list[Message], start: datetime) -> list[tuple[str, float]]:
    return [(str(m.channel), (at(m) - start).total_seconds()) for m in messages]


def assert_times(messages: list[Message], start: datetime, expected: list[tuple[str, float]]):
    """Channel by channel, each send within TOLERANCE of its expected offset."""
    got = offsets(messages, start)
    assert [c for c, _ in got] == [c for c, _ in expected], got
    for (channel, seconds), (_, want) in zip(got, expected, strict=True):
        assert abs(seconds - want) <= TOLERANCE.total_seconds(), (channel, seconds, want, got)


async def _shop(
    env: WorkflowEnvironment, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[Journeys]:
    shop = Journeys(env, settings, sessionmaker)
    async with build_worker(env.client, settings.temporal_task_queue, sessionmaker, settings):
        yield shop
    await shop.archive_rules()
    await shop.terminate_all()


@pytest.fixture
async def shop(
    time_skipping: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_twilio: FakeTwilio,
    fake_sendgrid: FakeSendGrid,
) -> AsyncIterator[Journeys]:
    settings = reporting_settings(database_url, task_queue, fake_twilio, fake_sendgrid)
    async for shop in _shop(time_skipping, settings, sessionmaker):
        yield shop


@pytest.fixture
async def outbox_shop(
    time_skipping: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[Journeys]:
    settings = Settings(
        env=Environment.test, database_url=database_url, temporal_task_queue=task_queue
    )
    async for shop in _shop(time_skipping, settings, sessionmaker):
        yield shop


async def test_a_three_second_sequence_goes_out_three_seconds_apart(shop: Journeys):
    journey, _ = await shop.start(
        send("email"), wait("PT3S"), send("sms", "email"), wait("PT3S"), send("whatsapp", "email")
    )
    await shop.env.sleep(MINUTE)

    messages = await shop.sent(journey)
    assert messages, "the journey sent nothing"
    assert_times(messages, at(messages[0]), [("email", 0), ("sms", 3), ("whatsapp", 6)])
    # The providers have said nothing: the last two are still watched, the journey open.
    assert (await shop.entry(journey)).exited_at is None

    # It completes once the last watch has closed, ten minutes after the last send: a
    # bounce of the last message would still have sent it by email.
    await shop.env.sleep(15 * MINUTE)
    entry = await shop.entry(journey)
    assert entry.exit_reason == "completed"
    assert entry.exited_at is not None
    closed = (entry.exited_at - at(messages[-1])).total_seconds()
    assert abs(closed - 600) <= TOLERANCE.total_seconds(), closed
    assert [m.status for m in await ledger(shop, journey)] == ["sent", "sent", "sent"]


async def test_whatsapp_then_sms_five_minutes_later_is_five_minutes_later(shop: Journeys):
    journey, phone = await shop.start(send("whatsapp", "email"), wait("PT5M"), send("sms"))
    await shop.env.sleep(7 * MINUTE)

    messages = await shop.sent(journey)
    assert messages, "the journey sent nothing"
    assert_times(messages, at(messages[0]), [("whatsapp", 0), ("sms", 300)])
    assert [m.to for m in messages] == [phone, phone]


async def test_a_bounce_sends_the_step_on_the_next_channel_and_later_steps_keep_their_times(
    shop: Journeys,
):
    journey, _ = await shop.start(send("sms", "email"), wait("PT1M"), send("whatsapp", "email"))
    await shop.env.sleep(2 * MINUTE)
    sms, whatsapp = await shop.sent(journey)
    assert_times([sms, whatsapp], at(sms), [("sms", 0), ("whatsapp", 60)])

    # Two minutes in, within its 10-minute window and after the next step went out, the
    # SMS is reported undelivered: the same step goes out by email at once.
    await report_undelivered(shop, sms)
    reported = await shop.now()
    await shop.env.sleep(MINUTE)
    sms, whatsapp, email = await shop.sent(journey)
    assert (sms.channel, sms.status, sms.error_code) == ("sms", "failed", "30005")
    # Its key is the step's own, one attempt on: it cannot collide with the later step.
    assert (email.channel, email.step, email.key) == ("email", sms.step, sms.key[:-2] + "#2")
    assert reported - TOLERANCE <= at(email) <= reported + AT_ONCE
    assert whatsapp.step != sms.step

    # The last step bounces while the journey, out of steps, waits for its watch: the
    # fallback still goes out, and only then does the journey complete.
    await report_undelivered(shop, whatsapp)
    await shop.env.sleep(MINUTE)
    rows = await ledger(shop, journey)
    assert [(m.channel, m.status) for m in rows] == [
        ("sms", "failed"),
        ("whatsapp", "failed"),
        ("email", "sent"),
        ("email", "sent"),
    ]
    assert [m.key for m in rows[2:]] == [sms.key[:-2] + "#2", whatsapp.key[:-2] + "#2"]
    entry = await shop.entry(journey)
    assert entry.exit_reason == "completed"
    assert entry.exited_at is not None
    assert entry.exited_at - at(rows[3]) < AT_ONCE


async def test_an_order_during_a_watch_ends_the_journey_at_once_and_no_fallback_follows(
    shop: Journeys,
):
    journey, phone = await shop.start(send("sms", "email"), wait("P1D"), send("email"))
    await shop.env.sleep(MINUTE)
    [sms] = await shop.sent(journey)
    customer_id = sms.customer_id

    await shop.order(customer_id, phone)
    ordered = await shop.now()
    await shop.env.sleep(MINUTE)
    entry = await shop.entry(journey)
    assert entry.exit_reason == "ordered"
    assert entry.exited_at is not None
    assert entry.exited_at - ordered < AT_ONCE  # not when the watch would have closed

    # The bounce comes after the exit: the customer ordered, nothing more is sent.
    await report_undelivered(shop, sms)
    await shop.env.sleep(15 * MINUTE)
    assert [(m.channel, m.status) for m in await ledger(shop, journey)] == [("sms", "failed")]
    description = await shop.env.client.get_workflow_handle(journey).describe()
    assert description.status == WorkflowExecutionStatus.COMPLETED
    assert description.close_time is not None
    assert description.close_time - ordered < AT_ONCE


async def test_an_exit_found_at_the_next_send_ends_the_earlier_steps_watch_at_once(
    shop: Journeys,
):
    journey, _ = await shop.start(send("sms", "email"), wait("PT1M"), send("email"))
    await shop.env.sleep(30 * SECOND)
    [sms] = await shop.sent(journey)

    # The customer withdraws every consent: the next send's check on fresh data ends the
    # journey, and with it the SMS's watch, nine minutes before its window would close.
    await shop.unsubscribe(sms.customer_id)
    await shop.env.sleep(2 * MINUTE)
    entry = await shop.entry(journey)
    assert entry.exit_reason == "unsubscribed"
    assert entry.exited_at is not None
    assert abs((entry.exited_at - at(sms)).total_seconds() - 60) <= AT_ONCE.total_seconds()
    assert [m.channel for m in await ledger(shop, journey)] == ["sms"]


async def test_a_bounced_whatsapp_cart_reminder_goes_out_by_email_with_its_coupon(
    shop: Journeys,
):
    """The default abandoned-cart rule on providers that report: the WhatsApp reminder
    with 5% off bounces two minutes after it went out; the same step, coupon and all,
    goes out by email, and the next steps keep their days."""
    await _whatsapp_content_template(shop.sessionmaker)
    customer_id, phone = await reachable_customer(shop, await shop.now())
    definition = copy.deepcopy(rules.DEFAULT_ABANDONED_CART)
    definition["priority"] = 1
    definition["conditions"] = {"field": "customer.id", "op": "eq", "value": customer_id}
    async with shop.sessionmaker() as session, session.begin():
        rule, _ = await rules.create(
            session, RuleDefinition.model_validate(definition), ACTOR, status="active"
        )
    shop.rules.append(rule.id)
    start = await shop.at_local(10)
    cart_id = uid("cart")
    event = cart_updated(cart_id, occurred_at=_iso(start), **shop.profile(customer_id, phone))
    await shop.send(event)
    journey = workflow_ids.cart(cart_id)

    await shop.env.sleep(24 * HOUR + 2 * MINUTE)
    email, whatsapp = await shop.sent(journey)
    assert (email.channel, whatsapp.channel) == ("email", "whatsapp")
    await report_undelivered(shop, whatsapp)
    reported = await shop.now()
    await shop.env.sleep(7 * DAY)

    rows = await shop.sent(journey)
    assert [(m.channel, m.template, m.status) for m in rows] == [
        ("email", "cart_reminder_1", "sent"),
        ("whatsapp", "cart_reminder_2", "failed"),
        ("email", "cart_reminder_2", "sent"),
        ("email", "cart_reminder_3", "sent"),
        ("sms", "cart_reminder_3", "sent"),
        ("email", "cart_reminder_4", "sent"),
    ]
    fallback = rows[2]
    assert reported - TOLERANCE <= at(fallback) <= reported + AT_ONCE
    assert fallback.coupon_code is not None
    assert fallback.coupon_code == whatsapp.coupon_code
    assert "5%" in (fallback.body or "")
    hours = [round((at(m) - start) / HOUR, 2) for m in rows]
    assert hours[:2] + hours[3:] == [1, 24, 72, 72, 168]
    handle = shop.env.client.get_workflow_handle_for(CartWorkflow.run, journey)
    state = await handle.query(CartWorkflow.state)
    assert state.journey is not None
    assert [(s.channel, s.status) for s in state.journey.sent] == [
        ("email", "sent"),
        ("whatsapp", "failed"),
        ("email", "sent"),
        ("email", "sent"),
        ("sms", "sent"),
        ("email", "sent"),
    ]


async def _whatsapp_content_template(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """The shop's approved WhatsApp template for the default rule's step 2."""
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


async def test_on_the_outbox_nothing_is_watched_and_the_journey_ends_with_its_last_send(
    outbox_shop: Journeys,
):
    journey, _ = await outbox_shop.start(send("email"), wait("PT3S"), send("sms", "email"))
    await outbox_shop.env.sleep(MINUTE)

    messages = await outbox_shop.sent(journey)
    assert [m.provider for m in messages] == ["outbox", "outbox"]
    assert_times(messages, at(messages[0]), [("email", 0), ("sms", 3)])
    entry = await outbox_shop.entry(journey)
    assert entry.exit_reason == "completed"
    assert entry.exited_at is not None
    assert entry.exited_at - at(messages[-1]) < AT_ONCE
