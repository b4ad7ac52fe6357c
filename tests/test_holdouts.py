"""Holdout groups on the time-skipping server: a rule holding out half its customers sends
nothing to them (the ledger says why), while their journeys wait, exit on an order and
count their conversions exactly like the treated ones; test runs and re-entries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from config.settings import Environment, Settings
from contracts import workflow_ids
from contracts.rules import RuleDefinition
from db.models import (
    Attribution,
    AttributionModel,
    Coupon,
    JourneyEntry,
    JourneyOrder,
    Message,
)
from services.analytics.lift import rule_lift
from services.analytics.period import period, shop_zone
from services.journeys import admission, rules
from services.messaging.provider_events import apply_sendgrid_events
from services.messaging.send import HELD_OUT
from tests.factories import customer, order_placed, uid
from tests.provider_reports import reachable_customer
from tests.skipping_shop import SkippingShop
from worker import build_worker

ACTOR = rules.Actor(key_id=None, name="tests")
CUSTOMERS = 40


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
async def shop(
    time_skipping: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[SkippingShop]:
    settings = Settings(
        env=Environment.test, database_url=database_url, temporal_task_queue=task_queue
    )
    # Credit under the settings' windows, whatever an earlier test (the API fuzzer) put
    # in force through PUT /v1/analytics/attribution-model.
    async with sessionmaker() as session, session.begin():
        await session.execute(delete(AttributionModel))
    shop = SkippingShop(time_skipping, settings, sessionmaker)
    async with build_worker(time_skipping.client, task_queue, sessionmaker, settings):
        yield shop
    await shop.terminate_all()


def _welcome(customer_ids: list[str], **changes: Any) -> RuleDefinition:
    return RuleDefinition.model_validate(
        {
            "name": "Welcome with a holdout",
            "trigger": {"event": "customer.created"},
            "conditions": {"field": "customer.id", "op": "in", "value": customer_ids},
            "quiet_hours": None,
            "steps": [
                {"send": {"channels": ["email"], "template": "welcome"}},
                {"wait": "P1D"},
                {
                    "send": {
                        "channels": ["email"],
                        "template": "welcome",
                        "incentive": {"percent_off": 10},
                    }
                },
            ],
            "exit": {"events": ["order.placed", "unsubscribed"], "order_scope": "customer"},
            "attribution_window": "P2D",
            "holdout_percent": 50,
            **changes,
        }
    )


async def _rule(sessionmaker: async_sessionmaker[AsyncSession], definition: RuleDefinition) -> str:
    async with sessionmaker() as session, session.begin():
        rule, _ = await rules.create(session, definition, ACTOR, status="active")
        return rule.id


async def test_half_held_out_get_nothing_yet_wait_exit_and_convert_like_the_rest(
    shop: SkippingShop,
):
    ids = [uid("c_hold") for _ in range(CUSTOMERS)]
    rule_id = await _rule(shop.sessionmaker, _welcome(ids))
    started = await shop.now()
    for customer_id in ids:
        await shop.send(
            {
                "id": uid("evt"),
                "type": "customer.created",
                "occurred_at": _iso(await shop.now()),
                "customer": customer(customer_id, email=f"{customer_id}@example.com"),
                "data": {},
            }
        )
    await shop.env.sleep(timedelta(hours=2))
    buyers = ids[::4]  # ten customers order two hours in, held out or not
    for customer_id in buyers:
        event = order_placed(
            cart_id=None, customer_id=customer_id, occurred_at=_iso(await shop.now())
        )
        await shop.send(event)
    await shop.env.sleep(timedelta(days=4))  # a day of steps, two of waiting for orders
    handles = [shop.env.client.get_workflow_handle(workflow_ids.journey(rule_id, c)) for c in ids]
    results = await asyncio.gather(*(h.result() for h in handles))
    exits = {c: r["exit_reason"] for c, r in zip(ids, results, strict=True)}

    async with shop.sessionmaker() as session:
        entries = {
            e.customer_id: e
            for e in await session.scalars(
                select(JourneyEntry).where(JourneyEntry.rule_id == rule_id)
            )
        }
        ledger = list(await session.scalars(select(Message).where(Message.rule_id == rule_id)))
        coupons = list(await session.scalars(select(Coupon).where(Coupon.rule_id == rule_id)))
        goal = {
            entry.customer_id
            for entry in entries.values()
            for _ in await session.scalars(
                select(JourneyOrder).where(
                    JourneyOrder.entry_id == entry.id, JourneyOrder.converted.is_(True)
                )
            )
        }
        lift = await rule_lift(
            session, rule_id, period(None, None, shop_zone(shop.settings), now=started)
        )

    held = {c for c, e in entries.items() if e.holdout}
    assert held == {c for c in ids if admission.held_out(rule_id, c, 50)}
    assert 10 <= len(held) <= 30, f"{len(held)} of {CUSTOMERS} held out"
    # Held out: every step is in the ledger as held out, none went out, no coupon minted.
    for message in ledger:
        if message.customer_id in held:
            assert (message.status, message.reason, message.sent_at) == (
                "suppressed",
                HELD_OUT,
                None,
            )
        else:
            assert message.status == "sent", message.reason
    steps = {c: sorted(m.step or "" for m in ledger if m.customer_id == c) for c in ids}
    for c in ids:
        assert steps[c] == (["0"] if c in buyers else ["0", "2"]), c
    assert {c.customer_id for c in coupons} == set(ids) - held - set(buyers)
    # Exits and conversions the same for both groups.
    assert exits == {c: "ordered" if c in buyers else "completed" for c in ids}
    assert goal == set(buyers)
    [version] = lift
    assert (version.treated.journeys, version.held_out.journeys) == (
        CUSTOMERS - len(held),
        len(held),
    )
    assert (version.treated.conversions, version.held_out.conversions) == (
        len(set(buyers) - held),
        len(set(buyers) & held),
    )


async def test_the_same_customer_is_held_out_every_time_but_never_in_a_test_run(
    sessionmaker: async_sessionmaker[AsyncSession],
):
    ids = [uid("c_again") for _ in range(12)]
    rule_id = await _rule(sessionmaker, _welcome(ids))
    held = next(c for c in ids if admission.held_out(rule_id, c, 50))
    kept = next(c for c in ids if not admission.held_out(rule_id, c, 50))
    now = datetime.now().astimezone()

    async def enter(customer_id: str, run: str, *, test: bool = False) -> bool:
        async with sessionmaker() as session, session.begin():
            entry = await admission.enter_rule(
                session,
                rule_id=rule_id,
                customer_id=customer_id,
                workflow_id=workflow_ids.journey(rule_id, customer_id),
                run_id=run,
                context={"customer": {"id": customer_id}},
                triggered_at=now,
                now=now,
                test=test,
            )
        assert isinstance(entry, admission.Entry), entry
        return entry.holdout

    assert [await enter(held, "r1"), await enter(held, "r2"), await enter(held, "r1")] == [
        True,
        True,
        True,
    ]
    assert await enter(kept, "r3") is False
    assert await enter(held, "test-run", test=True) is False


async def test_three_rules_message_one_customer_and_the_clicked_one_gets_the_order(
    shop: SkippingShop,
):
    """Three welcome rules, one per channel, each send to the same customer; the email is
    clicked; the customer orders: all three journeys end on the order and ask credit for
    it, one message gets it (the click beats two plain sends), and what the three rules
    are credited adds up to no more than the order."""
    customer_id, number = await reachable_customer(shop, await shop.now())
    rule_ids = []
    for channel in ("email", "sms", "whatsapp"):
        definition = _welcome(
            [customer_id],
            name=f"Welcome by {channel}",
            holdout_percent=0,
            steps=[{"send": {"channels": [channel], "template": "welcome"}}, {"wait": "P1D"}],
        )
        rule_ids.append(await _rule(shop.sessionmaker, definition))
    await shop.send(
        {
            "id": uid("evt"),
            "type": "customer.created",
            "occurred_at": _iso(await shop.now()),
            "customer": customer(customer_id, email=f"{customer_id}@example.com", phone=number),
            "data": {},
        }
    )
    await shop.env.sleep(timedelta(minutes=30))
    async with shop.sessionmaker() as session:
        sent = {
            m.channel: m
            for m in await session.scalars(
                select(Message).where(Message.customer_id == customer_id)
            )
        }
    assert {c: m.status for c, m in sent.items()} == {
        "email": "sent",
        "sms": "sent",
        "whatsapp": "sent",
    }
    async with shop.sessionmaker() as session, session.begin():
        clicked = {
            "email": f"{customer_id}@example.com",
            "timestamp": int(datetime.now().timestamp()),
            "event": "click",
            "sg_event_id": uid("sg"),
            "sutra_message_id": str(sent["email"].id),
        }
        assert await apply_sendgrid_events(session, [clicked]) == 1
    await shop.env.sleep(timedelta(minutes=30))
    order = order_placed(
        cart_id=None, customer_id=customer_id, occurred_at=_iso(await shop.now()), total="7200.00"
    )
    await shop.send(order)
    await shop.env.sleep(timedelta(days=2))
    results = [
        await shop.env.client.get_workflow_handle(workflow_ids.journey(r, customer_id)).result()
        for r in rule_ids
    ]

    async with shop.sessionmaker() as session:
        credits = list(
            await session.scalars(
                select(Attribution).where(Attribution.order_id == order["data"]["order_id"])
            )
        )
        seen = list(
            await session.scalars(
                select(JourneyOrder).where(JourneyOrder.order_id == order["data"]["order_id"])
            )
        )
        claimed = await session.scalar(
            select(func.coalesce(func.sum(Attribution.revenue), 0)).where(
                Attribution.rule_id.in_(rule_ids)
            )
        )

    assert [r["exit_reason"] for r in results] == ["ordered", "ordered", "ordered"]
    assert len(seen) == 3  # every journey saw the order as its goal
    assert [(c.rule_id, c.channel, c.message_id) for c in credits] == [
        (rule_ids[0], "email", sent["email"].id)
    ]
    assert claimed == Decimal("7200.00")  # the order's revenue, once, not three times
