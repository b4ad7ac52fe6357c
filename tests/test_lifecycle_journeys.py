"""Lifecycle journeys over days and weeks, on the time-skipping server: welcome series,
post-purchase, replenishment and win-back — the right message on the right day, and the
exits a marketer expects (an order ends a welcome series or a win-back, a re-purchase ends
a replenishment reminder)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from config.settings import Environment, Settings
from contracts import workflow_ids
from contracts.lifecycle import JourneyStart, LifecycleState
from contracts.names import STATE_QUERY
from contracts.rules import RuleDefinition
from db.models import Attribution, JourneyEntry, Message
from services.journeys import rules
from services.journeys.starts import claim_and_start
from tests.factories import customer, item, order_placed, uid
from tests.skipping_shop import SkippingShop
from worker import build_worker

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
ACTOR = rules.Actor(key_id=None, name="tests")


class Lifecycle(SkippingShop):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.rules: list[str] = []

    async def rule(self, customer_id: str, **definition: Any) -> str:
        """An active rule for this test's customer only: tests share one database."""
        definition.setdefault("name", f"test {definition['trigger']['event']}")
        definition["conditions"] = {"field": "customer.id", "op": "eq", "value": customer_id}
        async with self.sessionmaker() as session, session.begin():
            rule, _ = await rules.create(
                session, RuleDefinition.model_validate(definition), ACTOR, status="active"
            )
        self.rules.append(rule.id)
        return rule.id

    async def messages(self, customer_id: str) -> list[Message]:
        """What the customer's journeys sent (not the orders' own confirmations)."""
        async with self.sessionmaker() as session:
            rows = await session.scalars(
                select(Message)
                .where(
                    Message.customer_id == customer_id,
                    Message.rule_id.is_not(None),
                    Message.status.in_(("sent", "delivered")),
                )
                .order_by(Message.sent_at)
            )
            return list(rows)

    async def journey(self, workflow_id: str) -> LifecycleState:
        handle = self.env.client.get_workflow_handle(workflow_id)
        return await handle.query(STATE_QUERY, result_type=LifecycleState)

    async def start(self, *starts: JourneyStart) -> None:
        report = await claim_and_start(
            self.env.client, self.sessionmaker, self.settings.temporal_task_queue, starts
        )
        self.workflows += [s.input().workflow_id for s in starts]
        assert report.started == len(starts)

    async def customer_created(self, customer_id: str) -> None:
        await self.send(
            {
                "id": uid("evt"),
                "type": "customer.created",
                "occurred_at": _iso(await self.now()),
                "customer": customer(customer_id, email=f"{customer_id}@example.com"),
                "data": {},
            }
        )

    async def order(self, customer_id: str, *skus: str) -> str:
        order = order_placed(
            cart_id=None, customer_id=customer_id, occurred_at=_iso(await self.now())
        )
        if skus:
            order["data"]["items"] = [item(sku) for sku in skus]
            order["data"]["total"] = f"{4500 * len(skus)}.00"
        await self.send(order)
        return str(order["data"]["order_id"])

    async def archive_rules(self) -> None:
        async with self.sessionmaker() as session, session.begin():
            for rule_id in self.rules:
                await rules.transition(session, rule_id, "archived", ACTOR)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _days(messages: list[Message], start: datetime) -> list[tuple[str, float]]:
    return [
        (m.template, round((m.sent_at - start) / DAY, 2))  # type: ignore[operator]
        for m in messages
    ]


@pytest.fixture
async def shop(
    time_skipping: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[Lifecycle]:
    settings = Settings(
        env=Environment.test, database_url=database_url, temporal_task_queue=task_queue
    )
    shop = Lifecycle(time_skipping, settings, sessionmaker)
    async with build_worker(time_skipping.client, task_queue, sessionmaker, settings):
        yield shop
    await shop.archive_rules()
    await shop.terminate_all()


WELCOME: dict[str, Any] = {
    "trigger": {"event": "customer.created"},
    "steps": [
        {"send": {"channels": ["email"], "template": "welcome"}},
        {"wait": "P2D"},
        {"send": {"channels": ["email"], "template": "welcome"}},
        {"wait": "P5D"},
        {
            "send": {
                "channels": ["email"],
                "template": "birthday",
                "incentive": {"percent_off": 10, "expires_in": "P7D"},
            }
        },
    ],
    "exit": {"events": ["order.placed", "unsubscribed"], "order_scope": "customer"},
    "reentry": {"policy": "once"},
}


async def test_the_welcome_series_sends_three_messages_over_seven_days(shop: Lifecycle):
    customer_id = uid("c")
    rule_id = await shop.rule(customer_id, **WELCOME)
    start = await shop.at_local(10)

    await shop.customer_created(customer_id)
    await shop.env.sleep(8 * DAY)

    messages = await shop.messages(customer_id)
    assert _days(messages, start) == [("welcome", 0), ("welcome", 2), ("birthday", 7)]
    assert [m.coupon_code is not None for m in messages] == [False, False, True]
    assert {m.rule_id for m in messages} == {rule_id}
    state = await shop.journey(workflow_ids.journey(rule_id, customer_id))
    assert (state.status, state.exit_reason) == ("running", "completed")  # in its credit window

    # Once the journey is over, another customer.created for the same customer starts a
    # new run, which the re-entry policy "once" keeps out.
    await shop.env.sleep(5 * DAY)
    await shop.customer_created(customer_id)
    await shop.env.sleep(3 * DAY)
    assert len(await shop.messages(customer_id)) == 3
    again = await shop.journey(workflow_ids.journey(rule_id, customer_id))
    assert (again.status, again.refused) == ("not_entered", "reentry")


async def test_the_first_order_ends_the_welcome_series_and_takes_the_credit(shop: Lifecycle):
    customer_id = uid("c")
    rule_id = await shop.rule(customer_id, **WELCOME)
    await shop.at_local(10)
    await shop.customer_created(customer_id)
    await shop.env.sleep(DAY)

    order_id = await shop.order(customer_id)
    await shop.env.sleep(10 * DAY)

    [welcome] = await shop.messages(customer_id)
    handle = shop.env.client.get_workflow_handle(workflow_ids.journey(rule_id, customer_id))
    state = LifecycleState.model_validate(await handle.result())
    assert (state.status, state.exit_reason, state.orders) == ("ended", "ordered", [order_id])
    async with shop.sessionmaker() as session:
        credit = await session.get(Attribution, order_id)
        entry = await session.scalar(select(JourneyEntry).where(JourneyEntry.rule_id == rule_id))
    assert credit is not None
    assert credit.message_id == welcome.id
    assert entry is not None
    assert entry.exit_reason == "ordered"


async def test_post_purchase_thanks_asks_for_a_review_then_cross_sells(shop: Lifecycle):
    customer_id = uid("c")
    rule_id = await shop.rule(
        customer_id,
        trigger={"event": "order.delivered"},
        steps=[
            {"send": {"channels": ["email"], "template": "order_delivered"}},
            {"wait": "P3D"},
            {"send": {"channels": ["email"], "template": "review_request"}},
            {"wait": "P11D"},
            {"send": {"channels": ["email"], "template": "review_request"}},
        ],
        exit={"events": ["unsubscribed"]},
    )
    await shop.at_local(10)
    order_id = await shop.order(customer_id, "SKU-TEA")
    # Delivered within the order's 24 h shipping SLA, not on it: see SkippingShop.
    await shop.env.sleep(DAY - HOUR)
    start = await shop.now()
    await shop.send(
        {
            "id": uid("evt"),
            "type": "order.delivered",
            "occurred_at": _iso(start),
            "data": {"order_id": order_id},
        }
    )
    await shop.env.sleep(5 * DAY)
    await shop.order(customer_id)  # a new order does not end a post-purchase journey
    await shop.env.sleep(10 * DAY)

    messages = await shop.messages(customer_id)
    assert _days(messages, start) == [
        ("order_delivered", 0),
        ("review_request", 3),
        ("review_request", 14),
    ]
    assert "Lawn suit" in (messages[1].body or "")  # the delivered order's item
    state = await shop.journey(workflow_ids.journey(rule_id, customer_id, order_id))
    assert state.exit_reason == "completed"


def _replenish(rule_id: str, customer_id: str, sku: str, at: datetime) -> JourneyStart:
    return JourneyStart(
        rule_id=rule_id,
        customer_id=customer_id,
        occurrence=f"replenish-ord-{sku}",
        trigger="replenishment_due",
        triggered_at=at,
        sku=sku,
        context={"product": {"sku": sku, "name": "Green tea"}},
    )


async def test_a_replenishment_reminder_is_cancelled_by_buying_the_product_again(
    shop: Lifecycle,
):
    steps = [{"wait": "P1D"}, {"send": {"channels": ["email"], "template": "welcome"}}]
    rebuys, other = uid("c"), uid("c")
    rebuy_rule = await shop.rule(
        rebuys, trigger={"event": "replenishment_due"}, steps=steps, exit={"events": []}
    )
    other_rule = await shop.rule(
        other, trigger={"event": "replenishment_due"}, steps=steps, exit={"events": []}
    )
    start = await shop.at_local(10)
    await shop.start(
        _replenish(rebuy_rule, rebuys, "SKU-TEA", start),
        _replenish(other_rule, other, "SKU-TEA", start),
    )
    await shop.env.sleep(timedelta(hours=6))

    await shop.order(rebuys, "SKU-TEA")  # bought it again: no reminder
    await shop.order(other, "SKU-MUG")  # bought something else: still reminded
    await shop.env.sleep(2 * DAY)

    assert await shop.messages(rebuys) == []
    assert _days(await shop.messages(other), start) == [("welcome", 1)]
    rebought = await shop.journey(workflow_ids.journey(rebuy_rule, rebuys, "replenish-ord-SKU-TEA"))
    assert rebought.exit_reason == "rebought"


async def test_win_back_ends_on_an_order_and_a_new_spell_starts_a_new_journey(shop: Lifecycle):
    customer_id = uid("c")
    rule_id = await shop.rule(
        customer_id,
        trigger={"event": "inactivity", "after": "P90D"},
        steps=[
            {
                "send": {
                    "channels": ["email"],
                    "template": "birthday",
                    "incentive": {"percent_off": 10, "expires_in": "P7D"},
                }
            },
            {"wait": "P7D"},
            {
                "send": {
                    "channels": ["email"],
                    "template": "birthday",
                    "incentive": {"percent_off": 15, "expires_in": "P7D"},
                }
            },
        ],
        exit={"events": ["order.placed", "unsubscribed"], "order_scope": "customer"},
    )
    await shop.customer_created(customer_id)  # a customer Sutra knows, long ago
    start = await shop.at_local(10)
    spell = JourneyStart(
        rule_id=rule_id,
        customer_id=customer_id,
        occurrence="inactive-since-2026-01-01",
        trigger="inactivity",
        triggered_at=start,
    )
    await shop.start(spell)
    await shop.env.sleep(2 * DAY)
    order_id = await shop.order(customer_id)
    await shop.env.sleep(8 * DAY)

    [first] = await shop.messages(customer_id)
    assert first.coupon_code is not None
    ended = await shop.journey(workflow_ids.journey(rule_id, customer_id, spell.occurrence))
    assert (ended.exit_reason, ended.orders) == ("ordered", [order_id])
    async with shop.sessionmaker() as session:
        credit = await session.get(Attribution, order_id)
    assert credit is not None
    assert credit.message_id == first.id

    # The same spell is never started twice; the order opened a new one, which is.
    again = await claim_and_start(
        shop.env.client, shop.sessionmaker, shop.settings.temporal_task_queue, [spell]
    )
    assert (again.claimed, again.started) == (0, 0)
    await shop.start(
        spell.model_copy(
            update={"occurrence": "inactive-since-2026-11-30", "triggered_at": await shop.now()}
        )
    )
    await shop.env.sleep(DAY)
    assert len(await shop.messages(customer_id)) == 2
