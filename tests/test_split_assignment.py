"""A/B split assignment: recorded once in PostgreSQL, spread as the weights say, stable per
customer, and safe for journeys whose histories were written before it was recorded."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from config.settings import Environment, Settings
from contracts.events import EVENT_ADAPTER
from contracts.experiments import RECORD_SPLIT_PATCH, AssignVariantInput
from contracts.rules import RuleDefinition
from db.models import JourneyEntry, Message, SplitAssignment
from services.customers.profiles import upsert_from_events
from services.journeys import experiments, rules
from tests.factories import cart_updated, uid
from tests.skipping_shop import SkippingShop
from worker import build_worker
from workflows import registry
from workflows.journey_split import split_bucket

HISTORIES = Path(__file__).parent / "histories"
ACTOR = rules.Actor(key_id=None, name="tests")
VARIANTS = [("a", 50), ("b", 50)]


def split_rule(customer_id: str) -> dict[str, Any]:
    """An abandoned-cart rule, for this customer only, whose one step is a 50/50 split."""
    return {
        "name": "Split reminder",
        "trigger": {"event": "cart.abandoned", "after": "PT1H"},
        "conditions": {"field": "customer.id", "op": "eq", "value": customer_id},
        "priority": 1,
        "quiet_hours": None,
        "steps": [
            {
                "split": [
                    {
                        "weight": 50,
                        "name": "a",
                        "steps": [{"send": {"channels": ["email"], "template": "cart_reminder_1"}}],
                    },
                    {
                        "weight": 50,
                        "name": "b",
                        "steps": [{"send": {"channels": ["sms"], "template": "cart_reminder_1"}}],
                    },
                ]
            }
        ],
    }


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
    shop = SkippingShop(time_skipping, settings, sessionmaker)
    async with build_worker(time_skipping.client, task_queue, sessionmaker, settings):
        yield shop
    await shop.terminate_all()


async def run_split_journey(shop: SkippingShop) -> tuple[str, str, str]:
    """A reachable customer abandons a cart under the split rule; a day later the journey
    has taken its variant and sent its message. Returns (customer, rule, cart)."""
    customer_id = uid("c")
    event = cart_updated(customer_id=customer_id, email=f"{customer_id}@example.com")
    async with shop.sessionmaker() as session, session.begin():
        await upsert_from_events(session, [EVENT_ADAPTER.validate_python(event)])
        rule, _ = await rules.create(
            session, RuleDefinition.model_validate(split_rule(customer_id)), ACTOR, status="active"
        )
    cart_id = uid("cart")
    now = (await shop.now()).isoformat().replace("+00:00", "Z")
    await shop.send(cart_updated(cart_id, customer_id=customer_id, occurred_at=now))
    await shop.env.sleep(timedelta(days=1))
    return customer_id, rule.id, cart_id


def _activities(events: Any) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]


def _markers(events: Any) -> list[str]:
    """The patch ids the history's markers record, in order."""
    return [
        json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
        for e in events
        if e.HasField("marker_recorded_event_attributes")
    ]


async def _assign_many(
    sessionmaker: async_sessionmaker[AsyncSession], rule_id: str, customers: list[str], run: str
) -> dict[str, str]:
    """Each customer's journey reaching the split, 1,000 to a statement."""
    chosen = {}
    for at in range(0, len(customers), 1000):
        batch = customers[at : at + 1000]
        async with sessionmaker() as session, session.begin():
            assignments = await experiments.assign_all(
                session,
                [
                    AssignVariantInput(
                        rule_id=rule_id,
                        rule_version=1,
                        path="0",
                        customer_id=customer_id,
                        workflow_id=f"cart/{customer_id}",
                        run_id=run,
                        variants=VARIANTS,
                        bucket=split_bucket(rule_id, customer_id),
                    )
                    for customer_id in batch
                ],
            )
        chosen.update({c: a.variant for c, a in zip(batch, assignments, strict=True)})
    return chosen


async def test_split_50_50_over_10000_simulated_customers_assigns_within_2_percent(
    sessionmaker: async_sessionmaker[AsyncSession],
):
    rule_id = uid("rule")
    customers = [f"c{i}" for i in range(10_000)]

    first = await _assign_many(sessionmaker, rule_id, customers, "run-1")
    share = sum(1 for v in first.values() if v == "a") / len(first)
    assert 0.48 <= share <= 0.52, share
    # Recorded: 10,000 rows, and asking again (a retried activity) changes nothing.
    assert await _assign_many(sessionmaker, rule_id, customers, "run-1") == first
    async with sessionmaker() as session:
        recorded = dict(
            (
                await session.execute(
                    select(SplitAssignment.customer_id, SplitAssignment.variant).where(
                        SplitAssignment.rule_id == rule_id
                    )
                )
            ).all()
        )
    assert recorded == first
    # The same customer gets the same variant in every journey of theirs (another run).
    rerun = await _assign_many(sessionmaker, rule_id, customers[:500], "run-2")
    assert rerun == {c: first[c] for c in customers[:500]}


async def test_the_assignment_survives_replay_and_is_the_variant_in_the_ledger(
    shop: SkippingShop,
):
    customer_id, rule_id, cart_id = await run_split_journey(shop)

    handle = shop.env.client.get_workflow_handle(f"cart/{cart_id}")
    history = await handle.fetch_history()
    # Recorded by today's code: the patch marker, then the activity, are in its history.
    assert RECORD_SPLIT_PATCH in _markers(history.events)
    assert "assign_variant" in _activities(history.events)
    await Replayer(workflows=registry.ALL, data_converter=pydantic_data_converter).replay_workflow(
        history
    )

    async with shop.sessionmaker() as session:
        [assignment] = (
            await session.scalars(select(SplitAssignment).where(SplitAssignment.rule_id == rule_id))
        ).all()
        [message] = (await session.scalars(select(Message).where(Message.cart_id == cart_id))).all()
        entry = await session.scalar(select(JourneyEntry).where(JourneyEntry.rule_id == rule_id))
    expected = "a" if split_bucket(rule_id, customer_id) < 50 else "b"
    assert (assignment.variant, assignment.reason, assignment.path) == (expected, "bucket", "0")
    assert assignment.customer_id == customer_id
    assert message.details.get("variant") == assignment.variant
    assert message.channel == ("email" if expected == "a" else "sms")
    assert message.step == f"0.{expected}.0"
    assert entry is not None
    assert entry.variant == assignment.variant


async def test_a_journey_that_split_before_assignments_were_recorded_replays_unchanged():
    """History written by the code before ``record-split-assignment``: the variant was
    chosen in the workflow, with no activity. Today's code must replay it exactly."""
    text = (HISTORIES / "cart_split_unpatched.json").read_text()
    history = WorkflowHistory.from_json("cart/recorded", text)
    assert "assign_variant" not in _activities(history.events)
    assert "send_message" in _activities(history.events)
    assert not _markers(history.events)

    await Replayer(workflows=registry.ALL, data_converter=pydantic_data_converter).replay_workflow(
        history
    )
