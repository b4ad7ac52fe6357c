"""Record the workflow histories under ``tests/histories/`` that ``tests/test_replay.py``
replays against today's workflow code.

Each scenario drives the real workflows on Temporal's time-skipping server, with the
production worker (``worker.build_worker``) and a PostgreSQL database of its own, exactly
as the tests do: events go in through intake and the dispatcher's delivery
(``tests/skipping_shop.py``), ops transitions as Updates, provider payments as the webhook
handlers record them. The finished (or continued-as-new) history of each workflow is
written as ``<type>_<scenario>.json`` (``WorkflowHistory.to_json()``).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        python -m tests.record_histories              # every missing history
    python -m tests.record_histories --list           # the scenarios and their files
    python -m tests.record_histories order_cod_cancelled  # one scenario (or file), if missing

Scenarios registered with ``reporting=True`` run on a second worker whose email goes
through SendGrid and SMS/WhatsApp through Twilio, the real SDKs against the fakes of
``tests/providers/``, so a provider can report a bounce back; the others use the outbox.

Existing files are never overwritten (``--overwrite`` exists for a history that was added
in the same change and is not yet committed). A committed history is what workflows
running in production look like: when one stops replaying, the code change is what has to
give (``workflow.patched``), not the history. See "Changing workflow code" in
CONTRIBUTING.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import workflow as temporal_workflow
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import WorkflowExecutionStatus, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from config.settings import Environment, Settings
from contracts import search_attributes, workflow_ids
from contracts.events import EVENT_ADAPTER
from contracts.journeys import JourneyControl, JourneyControlResult
from contracts.names import JOURNEY_CONTROL_UPDATE, SWEEP_WORKFLOW, TRANSITION_SIGNAL
from contracts.orders import TransitionRequest, TransitionSignal
from contracts.rules import RuleDefinition
from contracts.sweeps import SweepInput, SweepTotals
from db.engine import create_engine, create_sessionmaker
from db.migrate import upgrade
from db.models import (
    BackInStockSubscription,
    Customer,
    JourneyClaim,
    Message,
    Order,
    TemplateOverride,
)
from embedded.binaries import temporal_test_server
from services.customers.profiles import upsert_from_events
from services.journeys import admission, controls, rules
from services.orders import moves
from tests import workflow_sources
from tests.conftest import _admin_url, _plain, create_database, drop_database
from tests.factories import cart_updated, customer, item, order_placed, uid
from tests.order_shop import OrderShop
from tests.provider_reports import (
    ledger,
    reachable_customer,
    report_undelivered,
    reporting_settings,
)
from tests.providers.fake_sendgrid import FakeSendGrid
from tests.providers.fake_twilio import FakeTwilio
from worker import build_worker
from workflows import registry

HISTORIES = Path(__file__).parent / "histories"
# A history bigger than this is too long to read in a review; record a shorter scenario.
MAX_BYTES = 300_000

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
ACTOR = rules.Actor(key_id=None, name="record_histories")

# Enough back-in-stock subscribers, one per page, to fill one fan-out run (50 pages) and
# continue as new into a second.
FANOUT_SUBSCRIBERS = 51


class Recorder(OrderShop):
    """A shop on the time-skipping server whose workflows' histories are kept."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.histories: dict[str, WorkflowHistory] = {}

    async def keep(self, name: str, workflow_id: str, run_id: str | None = None) -> None:
        handle = self.env.client.get_workflow_handle(workflow_id, run_id=run_id)
        self.histories[name] = await handle.fetch_history()

    async def finish(self, workflow_id: str) -> Any:
        """Let the workflow run to its end, skipping time as far as it needs (only a handle
        from ``start_workflow`` skips time by itself while awaiting its result)."""
        handle = self.env.client.get_workflow_handle(workflow_id)
        step = MINUTE
        while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            try:
                await self.env.sleep(step)
            except RPCError as error:  # busy workers: the skip took longer than the call
                if error.status not in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
                    raise
            step = min(2 * step, DAY)
        return await handle.result()

    async def rule(self, customer_ids: list[str], definition: dict[str, Any]) -> str:
        """An active rule for these customers only (scenarios share one database)."""
        definition = copy.deepcopy(definition)
        definition.setdefault("name", f"recorded {definition['trigger']['event']}")
        definition["conditions"] = {"field": "customer.id", "op": "in", "value": customer_ids}
        async with self.sessionmaker() as session, session.begin():
            rule, _ = await rules.create(
                session, RuleDefinition.model_validate(definition), ACTOR, status="active"
            )
        return rule.id

    async def archive(self, rule_id: str) -> None:
        async with self.sessionmaker() as session, session.begin():
            await rules.transition(session, rule_id, "archived", ACTOR)

    async def cart(self, customer_id: str, cart_id: str | None = None, **values: Any) -> str:
        cart_id = cart_id or uid("cart")
        await self.send(
            cart_updated(
                cart_id, customer_id=customer_id, occurred_at=_iso(await self.now()), **values
            )
        )
        return cart_id

    async def cart_messages(self, cart_id: str) -> list[Message]:
        async with self.sessionmaker() as session:
            rows = await session.scalars(
                select(Message)
                .where(Message.cart_id == cart_id, Message.status.in_(("sent", "delivered")))
                .order_by(Message.sent_at, Message.channel)
            )
            return list(rows)

    async def order(self, customer_id: str, *, cart_id: str | None = None, **data: Any) -> str:
        event = order_placed(
            cart_id=cart_id, customer_id=customer_id, occurred_at=_iso(await self.now())
        )
        event["customer"]["email"] = f"{customer_id}@example.com"
        event["data"].update(data)
        await self.send(event)
        return str(event["data"]["order_id"])

    async def claimed_journeys(self, rule_id: str) -> list[str]:
        async with self.sessionmaker() as session:
            ids = list(
                await session.scalars(
                    select(JourneyClaim.workflow_id).where(JourneyClaim.rule_id == rule_id)
                )
            )
        self.workflows += ids
        return ids


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _previous_run(history: WorkflowHistory) -> str:
    """The run this one continued as new from."""
    started = history.events[0].workflow_execution_started_event_attributes
    assert started.continued_execution_run_id, "this run did not continue another"
    return started.continued_execution_run_id


async def _reachable_customer(shop: Recorder) -> str:
    """A customer in Karachi who can be reached on every channel (a profile only, as
    intake would write it: no workflow hears of it)."""
    customer_id = uid("c")
    event = cart_updated(customer_id=customer_id, items=[], email=f"{customer_id}@example.com")
    async with shop.sessionmaker() as session, session.begin():
        await upsert_from_events(session, [EVENT_ADAPTER.validate_python(event)])
    return customer_id


def _default_cart_rule() -> dict[str, Any]:
    definition = copy.deepcopy(rules.DEFAULT_ABANDONED_CART)
    definition["priority"] = 1
    return definition


# --- scenarios ----------------------------------------------------------------------------

Scenario = Callable[[Recorder], Awaitable[None]]
SCENARIOS: dict[str, tuple[tuple[str, ...], Scenario]] = {}
# Scenarios whose providers report back (SendGrid and Twilio fakes) instead of the outbox.
REPORTING: set[str] = set()


def scenario(*names: str, reporting: bool = False) -> Callable[[Scenario], Scenario]:
    """Register a scenario by the history files it writes."""

    def register(fn: Scenario) -> Scenario:
        SCENARIOS[fn.__name__] = (names, fn)
        if reporting:
            REPORTING.add(fn.__name__)
        return fn

    return register


@scenario("cart_default_sequence_expired")
async def cart_default_sequence_expired(shop: Recorder) -> None:
    """The default abandoned-cart rule to its end: email at 1 h, WhatsApp with 5 % off at
    24 h, email and SMS with 10 % at 72 h, email with 15 % at 7 days (smaller codes
    revoked), then the idle cart expires after 30 days."""
    customer_id = await _reachable_customer(shop)
    rule_id = await shop.rule([customer_id], _default_cart_rule())
    await shop.at_local(10)
    cart_id = await shop.cart(customer_id)
    result = await shop.finish(workflow_ids.cart(cart_id))
    assert result["status"] == "expired", result
    assert len(await shop.cart_messages(cart_id)) == 5
    await shop.keep("cart_default_sequence_expired", workflow_ids.cart(cart_id))
    await shop.archive(rule_id)


@scenario("cart_converted_by_order")
async def cart_converted_by_order(shop: Recorder) -> None:
    """Abandoned, reminded twice (the second with a coupon), then the customer orders with
    that coupon: the cart converts and the order is credited to the second reminder."""
    customer_id = await _reachable_customer(shop)
    rule_id = await shop.rule([customer_id], _default_cart_rule())
    await shop.at_local(10)
    cart_id = await shop.cart(customer_id, items=[item("SKU1", 2, "4500.00")])
    await shop.env.sleep(25 * HOUR)
    [_, second] = await shop.cart_messages(cart_id)
    assert second.coupon_code is not None
    await shop.order(
        customer_id,
        cart_id=cart_id,
        items=[item("SKU1", 2, "4500.00")],
        total="8550.00",
        coupon_code=second.coupon_code,
    )
    result = await shop.finish(workflow_ids.cart(cart_id))
    assert result["status"] == "converted", result
    await shop.keep("cart_converted_by_order", workflow_ids.cart(cart_id))
    await shop.archive(rule_id)


@scenario("cart_split_assigned")
async def cart_split_assigned(shop: Recorder) -> None:
    """A 50/50 split whose variant is recorded by the ``assign_variant`` activity (today's
    code, behind the ``core_patch`` marker); the variant's message, then expiry."""
    customer_id = await _reachable_customer(shop)
    branch = [
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
    rule_id = await shop.rule(
        [customer_id],
        {
            "name": "Split reminder",
            "trigger": {"event": "cart.abandoned", "after": "PT1H"},
            "priority": 1,
            "quiet_hours": None,
            "steps": [{"split": branch}],
        },
    )
    cart_id = await shop.cart(customer_id)
    result = await shop.finish(workflow_ids.cart(cart_id))
    assert result["status"] == "expired", result
    assert len(await shop.cart_messages(cart_id)) == 1
    await shop.keep("cart_split_assigned", workflow_ids.cart(cart_id))
    await shop.archive(rule_id)


@scenario("order_partial_cod_paid_after_reminders_delivered")
async def order_partial_cod_paid_after_reminders_delivered(shop: Recorder) -> None:
    """Partial COD: the upfront link, two reminders (15 min, 2 h), paid through the
    provider, confirmed, packed and shipped by the shop's events, delivered by ops: the
    rest collected in cash."""
    order_id = await shop.place("partial_cod", currency="INR", total="2999.99")
    await shop.env.sleep(2 * HOUR + MINUTE)
    assert await shop.templates(order_id) == [
        "cod_payment_request",
        "cod_payment_reminder",
        "cod_payment_reminder",
    ]
    await shop.provider_paid(order_id, payment_id="sbx_pay_upfront", provider="sandbox")
    await shop.settle()
    await shop.event("order.packed", order_id)
    await shop.event("order.shipped", order_id, tracking_url="https://track.example/1")
    await shop.settle()
    await shop.transition(order_id, "delivered")
    result = await shop.finish(workflow_ids.order(order_id))
    assert (result["status"], result["payment_status"]) == ("delivered", "fully_paid"), result
    await shop.keep(
        "order_partial_cod_paid_after_reminders_delivered", workflow_ids.order(order_id)
    )


@scenario("order_partial_cod_cancelled_refunded")
async def order_partial_cod_cancelled_refunded(shop: Recorder) -> None:
    """Partial COD paid upfront through the provider, then cancelled by ops: the upfront
    payment is refunded and the customer told."""
    order_id = await shop.place("partial_cod", currency="INR", total="1000.00")
    await shop.settle()
    await shop.provider_paid(order_id, payment_id="sbx_pay_refund", provider="sandbox")
    await shop.settle()
    await shop.transition(order_id, "cancelled", reason="customer asked")
    result = await shop.finish(workflow_ids.order(order_id))
    assert (result["status"], result["payment_status"]) == ("cancelled", "refunded"), result
    await shop.keep("order_partial_cod_cancelled_refunded", workflow_ids.order(order_id))


@scenario("order_cod_cancelled")
async def order_cod_cancelled(shop: Recorder) -> None:
    """COD, confirmed at once, then cancelled by the shop's ``order.cancelled`` event."""
    order_id = await shop.place("cod")
    await shop.settle()
    await shop.event("order.cancelled", order_id, reason="out of stock")
    result = await shop.finish(workflow_ids.order(order_id))
    assert result["status"] == "cancelled", result
    await shop.keep("order_cod_cancelled", workflow_ids.order(order_id))


@scenario("order_prepaid_delivered")
async def order_prepaid_delivered(shop: Recorder) -> None:
    """Prepaid: paid (``payment.captured``), then packed, shipped, out for delivery and
    delivered by ops transitions."""
    order_id = await shop.place("prepaid", currency="PKR", total="4500.00")
    await shop.settle()
    await shop.event(
        "payment.captured", order_id, amount="4500.00", currency="PKR", payment_id="pay_x1"
    )
    await shop.settle()
    for to in ("packed", "shipped", "out_for_delivery", "delivered"):
        await shop.transition(order_id, to)
    result = await shop.finish(workflow_ids.order(order_id))
    assert (result["status"], result["payment_status"]) == ("delivered", "fully_paid"), result
    await shop.keep("order_prepaid_delivered", workflow_ids.order(order_id))


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


@scenario("lifecycle_welcome_ended_by_order")
async def lifecycle_welcome_ended_by_order(shop: Recorder) -> None:
    """A welcome series: the first email, then the customer's first order on day 1 ends
    it during its two-day wait, credited to that email."""
    customer_id = uid("c")
    rule_id = await shop.rule([customer_id], WELCOME)
    await shop.at_local(10)
    await shop.send(
        {
            "id": uid("evt"),
            "type": "customer.created",
            "occurred_at": _iso(await shop.now()),
            "customer": customer(customer_id, email=f"{customer_id}@example.com"),
            "data": {},
        }
    )
    await shop.env.sleep(DAY)
    order_id = await shop.order(customer_id)
    workflow_id = workflow_ids.journey(rule_id, customer_id)
    result = await shop.finish(workflow_id)
    assert (result["status"], result["exit_reason"], result["orders"]) == (
        "ended",
        "ordered",
        [order_id],
    ), result
    await shop.keep("lifecycle_welcome_ended_by_order", workflow_id)
    await shop.archive(rule_id)


@scenario("lifecycle_post_purchase_completed")
async def lifecycle_post_purchase_completed(shop: Recorder) -> None:
    """Post-purchase on delivery: thanks, a review request at 3 days and again at 14; a new
    order on day 5 does not end it but is credited to it when it completes."""
    customer_id = await _reachable_customer(shop)
    rule_id = await shop.rule(
        [customer_id],
        {
            "trigger": {"event": "order.delivered"},
            "steps": [
                {"send": {"channels": ["email"], "template": "order_delivered"}},
                {"wait": "P3D"},
                {"send": {"channels": ["email"], "template": "review_request"}},
                {"wait": "P11D"},
                {"send": {"channels": ["email"], "template": "review_request"}},
            ],
            "exit": {"events": ["unsubscribed"]},
        },
    )
    await shop.at_local(10)
    order_id = await shop.order(customer_id, items=[item("SKU-TEA")])
    await shop.env.sleep(DAY)
    await shop.event("order.delivered", order_id)
    await shop.env.sleep(5 * DAY)
    await shop.order(customer_id)
    workflow_id = workflow_ids.journey(rule_id, customer_id, order_id)
    result = await shop.finish(workflow_id)
    assert (result["status"], result["exit_reason"]) == ("ended", "completed"), result
    await shop.keep("lifecycle_post_purchase_completed", workflow_id)
    await shop.archive(rule_id)


@scenario("sweep_birthdays_continued_as_new", "sweep_birthdays_last_run")
async def sweep_birthdays(shop: Recorder) -> None:
    """The hourly sweep over three customers whose birthday is today, one customer per
    page and one page per run: the first run (targets, a page, continue-as-new) and the
    last (the empty page, the experiments' judgement, done). Recorded before the patch
    sweep-batch-heartbeat; on today's code it records sweep_heartbeat_* instead."""
    await _sweep_birthdays(shop, "sweep_birthdays")


@scenario("sweep_heartbeat_continued_as_new", "sweep_heartbeat_last_run")
async def sweep_heartbeat(shop: Recorder) -> None:
    """The same sweep with its batches heartbeating (patch sweep-batch-heartbeat)."""
    await _sweep_birthdays(shop, "sweep_heartbeat")


async def _sweep_birthdays(shop: Recorder, name: str) -> None:
    today = (await shop.now()).date()
    ids = [f"bday_{uuid.uuid4().hex[:8]}_{n}" for n in range(3)]
    async with shop.sessionmaker() as session, session.begin():
        for customer_id in ids:
            session.add(
                Customer(
                    id=customer_id,
                    email=f"{customer_id}@example.com",
                    name="Ayesha",
                    locale="en",
                    timezone="UTC",
                    birthday=today.replace(
                        year=1992 if (today.month, today.day) == (2, 29) else 1990
                    ),
                    consent_email=True,
                    first_seen_at=await shop.now(),
                )
            )
    rule_id = await shop.rule(
        ids,
        {
            "trigger": {"event": "birthday", "at": "10:00"},
            "steps": [{"send": {"channels": ["email"], "template": "birthday"}}],
            "quiet_hours": None,
            "attribution_window": "PT1H",
        },
    )
    workflow_id = f"time-triggers/recorded-{uuid.uuid4().hex[:8]}"
    handle = await shop.env.client.start_workflow(
        SWEEP_WORKFLOW,
        SweepInput(only_rules=[rule_id], limit=1, batches_per_run=1),
        id=workflow_id,
        task_queue=shop.settings.temporal_task_queue,
        result_type=SweepTotals,
    )
    shop.workflows.append(workflow_id)
    totals = await handle.result()
    assert totals.started == 3, totals
    assert len(await shop.claimed_journeys(rule_id)) == 3
    assert handle.first_execution_run_id is not None
    await shop.keep(f"{name}_continued_as_new", workflow_id, handle.first_execution_run_id)
    await shop.keep(f"{name}_last_run", workflow_id)
    await shop.archive(rule_id)


@scenario("fanout_back_in_stock_continued_as_new", "fanout_back_in_stock_last_run")
async def fanout_back_in_stock(shop: Recorder) -> None:
    """A product back in stock for 51 subscribers, one per page with a rate pause after
    each: 50 pages, continue-as-new, the last page and the end. Recorded before the patch
    fanout-page-heartbeat; on today's code it records fanout_heartbeat_* instead."""
    await _fanout_back_in_stock(shop, "fanout_back_in_stock")


@scenario("fanout_heartbeat_last_run")
async def fanout_heartbeat(shop: Recorder) -> None:
    """The same fan-out with its pages heartbeating (patch fanout-page-heartbeat): its
    last run (the first run's 50 pages would only repeat the page 50 times)."""
    await _fanout_back_in_stock(shop, "fanout_heartbeat", first_run=False)


async def _fanout_back_in_stock(shop: Recorder, name: str, *, first_run: bool = True) -> None:
    sku = uid("SKU")
    now = await shop.now()
    ids = [f"bis_{uuid.uuid4().hex[:8]}_{n:02}" for n in range(FANOUT_SUBSCRIBERS)]
    async with shop.sessionmaker() as session, session.begin():
        for customer_id in ids:
            session.add(
                Customer(
                    id=customer_id,
                    email=f"{customer_id}@example.com",
                    name="Ayesha",
                    consent_email=True,
                    first_seen_at=now - 2 * DAY,
                )
            )
            session.add(
                BackInStockSubscription(sku=sku, customer_id=customer_id, subscribed_at=now - DAY)
            )
    rule_id = await shop.rule(
        ids,
        {
            "trigger": {"event": "product.back_in_stock"},
            "steps": [{"send": {"channels": ["email"], "template": "back_in_stock"}}],
            "quiet_hours": None,
            "attribution_window": "PT1S",
        },
    )
    event_id = uid("evt")
    await shop.send(
        {
            "id": event_id,
            "type": "product.back_in_stock",
            "occurred_at": _iso(now),
            "data": {"sku": sku, "name": "Lawn suit", "url": f"https://shop.example.com/p/{sku}"},
        }
    )
    workflow_id = workflow_ids.fanout(event_id)
    assert await shop.finish(workflow_id) == FANOUT_SUBSCRIBERS
    await shop.keep(f"{name}_last_run", workflow_id)
    if first_run:
        first = _previous_run(shop.histories[f"{name}_last_run"])
        await shop.keep(f"{name}_continued_as_new", workflow_id, first)
    for journey in ids:
        shop.workflows.append(workflow_ids.journey(rule_id, journey, f"bis-{event_id}"))
    await shop.archive(rule_id)


@scenario("cart_fallback_beside_bounced", reporting=True)
async def cart_fallback_beside_bounced(shop: Recorder) -> None:
    """The default abandoned-cart rule on providers that report back: the WhatsApp
    reminder with 5 % off is reported undelivered two minutes after it went out, and the
    watch beside the journey (``fallback-watch-beside-sequence``) sends that step by
    email with the same code; the later steps keep their days, then the cart expires."""
    customer_id, phone = await reachable_customer(shop, await shop.now())
    rule_id = await shop.rule([customer_id], _default_cart_rule())
    await shop.at_local(10)
    cart_id = await shop.cart(customer_id, phone=phone, email=f"{customer_id}@example.com")
    workflow_id = workflow_ids.cart(cart_id)
    await shop.env.sleep(DAY + 2 * MINUTE)
    [_, whatsapp] = await ledger(shop, workflow_id)
    assert whatsapp.channel == "whatsapp", whatsapp.channel
    await report_undelivered(shop, whatsapp)
    result = await shop.finish(workflow_id)
    assert result["status"] == "expired", result
    sent = [(m.channel, m.template) for m in await ledger(shop, workflow_id) if m.status == "sent"]
    assert sent == [
        ("email", "cart_reminder_1"),
        ("email", "cart_reminder_2"),
        ("email", "cart_reminder_3"),
        ("sms", "cart_reminder_3"),
        ("email", "cart_reminder_4"),
    ], sent
    await shop.keep("cart_fallback_beside_bounced", workflow_id)
    await shop.archive(rule_id)


@scenario("cart_branch_deferred_ended_by_order")
async def cart_branch_deferred_ended_by_order(shop: Recorder) -> None:
    """A branch on the cart's total ("4500.00" equals 4500: numeric equality) leads to a
    reminder due at 21:30, inside quiet hours: it waits for 09:00 beside a watch-free
    journey, the customer orders at 23:00, the journey ends then and the waiting reminder
    is given up (``abandon_message``)."""
    customer_id = await _reachable_customer(shop)
    send = {"send": {"channels": ["email", "sms"], "template": "cart_reminder_1"}}
    rule_id = await shop.rule(
        [customer_id],
        {
            "name": "Branching reminder",
            "trigger": {"event": "cart.abandoned", "after": "PT1H"},
            "priority": 1,
            "steps": [
                {
                    "branch": {
                        "if": {"field": "cart.total", "op": "eq", "value": 4500},
                        "then": [send],
                        "else": [{"send": {"channels": ["sms"], "template": "cart_reminder_1"}}],
                    }
                }
            ],
        },
    )
    await shop.at_local(20)
    await shop.env.sleep(30 * MINUTE)
    cart_id = await shop.cart(customer_id)
    await shop.env.sleep(2 * HOUR + 30 * MINUTE)
    await shop.order(customer_id, cart_id=cart_id)
    result = await shop.finish(workflow_ids.cart(cart_id))
    assert result["status"] == "converted", result
    assert await shop.cart_messages(cart_id) == []
    await shop.keep("cart_branch_deferred_ended_by_order", workflow_ids.cart(cart_id))
    await shop.archive(rule_id)


@scenario("lifecycle_split_and_branch")
async def lifecycle_split_and_branch(shop: Recorder) -> None:
    """A welcome split 50/50 (the variant recorded), then a branch on the customer's order
    count (numeric equality): the variant's email and the branch's."""
    customer_id = uid("c")
    rule_id = await shop.rule(
        [customer_id],
        {
            "trigger": {"event": "customer.created"},
            "steps": [
                {
                    "split": [
                        {
                            "weight": 50,
                            "name": "a",
                            "steps": [{"send": {"channels": ["email"], "template": "welcome_1"}}],
                        },
                        {
                            "weight": 50,
                            "name": "b",
                            "steps": [{"send": {"channels": ["email"], "template": "welcome_2"}}],
                        },
                    ]
                },
                {"wait": "P1D"},
                {
                    "branch": {
                        "if": {"field": "customer.orders_count", "op": "eq", "value": "0"},
                        "then": [{"send": {"channels": ["email"], "template": "welcome_2"}}],
                        "else": [{"send": {"channels": ["email"], "template": "welcome_1"}}],
                    }
                },
            ],
        },
    )
    await shop.at_local(10)
    await shop.send(
        {
            "id": uid("evt"),
            "type": "customer.created",
            "occurred_at": _iso(await shop.now()),
            "customer": customer(customer_id, email=f"{customer_id}@example.com"),
            "data": {},
        }
    )
    workflow_id = workflow_ids.journey(rule_id, customer_id)
    result = await shop.finish(workflow_id)
    assert (result["status"], result["exit_reason"]) == ("ended", "completed"), result
    await shop.keep("lifecycle_split_and_branch", workflow_id)
    await shop.archive(rule_id)


@scenario("order_delivered_then_returned_in_run")
async def order_delivered_then_returned_in_run(shop: Recorder) -> None:
    """COD, shipped by ops; the carrier reports it delivered and, a moment later, back at
    the warehouse: the run that ends with the delivery turns it into an RTO after delivery
    (the patched ending, ``order-acts-after-end``) and tells the shop."""
    order_id = await shop.place("cod")
    await shop.settle()
    await shop.transition(order_id, "shipped")
    await shop.event("order.delivered", order_id)
    await shop.event("order.rto", order_id, reason="refused at the door")
    result = await shop.finish(workflow_ids.order(order_id))
    assert (result["status"], result["payment_status"]) == ("rto", "pending"), result
    assert result["state"]["reopened"] == 0, "the ended order was reopened: record again"
    await shop.keep("order_delivered_then_returned_in_run", workflow_ids.order(order_id))


@scenario("order_moved_by_signal")
async def order_moved_by_signal(shop: Recorder) -> None:
    """COD moved by ops as the API moves it now (the ``transition_requested`` signal, its
    answer read back): shipped, the same move delivered twice, a move back to packed
    refused, out for delivery by the carrier's event, delivered by ops."""
    order_id = await shop.place("cod")
    await shop.settle()
    workflow_id = workflow_ids.order(order_id)
    shipped = TransitionSignal(
        request_id="record-1",
        request=TransitionRequest(to="shipped", by="record_histories"),
    )
    handle = shop.env.client.get_workflow_handle(workflow_id)
    await handle.signal(TRANSITION_SIGNAL, shipped)
    await handle.signal(TRANSITION_SIGNAL, shipped)
    await shop.settle()
    [back] = await asyncio.gather(shop.move(order_id, "packed"), return_exceptions=True)
    assert isinstance(back, moves.Refused), back
    assert back.status == "shipped", back.status
    await shop.event("order.out_for_delivery", order_id)
    assert (await shop.move(order_id, "delivered")).status == "delivered"
    result = await shop.finish(workflow_id)
    assert (result["status"], result["payment_status"]) == ("delivered", "fully_paid"), result
    statuses = [entry["status"] for entry in result["state"]["history"]]
    assert statuses.count("shipped") == 1, statuses
    await shop.keep("order_moved_by_signal", workflow_id)


@scenario("order_reopened_refunds_a_payment_after_cancellation")
async def order_reopened_refunds_a_payment_after_cancellation(shop: Recorder) -> None:
    """Partial COD never paid: cancelled at its deadline, and the order's run ends. The
    customer's payment lands afterwards: the ended order is reopened from its own state
    (``StartOrderInput.reopened``), refunds that payment, and ends again."""
    order_id = await shop.place("partial_cod", currency="INR", total="1000.00")
    await shop.env.sleep(25 * HOUR)
    ended = await shop.finish(workflow_ids.order(order_id))
    assert ended["status"] == "cancelled", ended
    await shop.provider_paid(order_id, payment_id="sbx_pay_late", provider="sandbox")
    result = await shop.finish(workflow_ids.order(order_id))
    assert (result["status"], result["payment_status"]) == ("cancelled", "refunded"), result
    assert result["state"]["reopened"] == 1, result
    await shop.keep(
        "order_reopened_refunds_a_payment_after_cancellation", workflow_ids.order(order_id)
    )


async def _row(shop: Recorder, order_id: str) -> Order:
    async with shop.sessionmaker() as session:
        row = await session.get(Order, order_id)
    assert row is not None, f"no read-model row for {order_id}"
    return row


@scenario("order_read_model_partial_cod_paid_delivered")
async def order_read_model_partial_cod_paid_delivered(shop: Recorder) -> None:
    """Partial COD kept in the orders read model (patch ``order-read-model``): the upfront
    link and one reminder, paid through the provider, shipped by the shop's event and
    delivered by ops; the row follows every step and ends delivered, fully paid."""
    order_id = await shop.place(
        "partial_cod", currency="INR", total="2000.00", city="Karachi", postal_code="74000"
    )
    await shop.env.sleep(15 * MINUTE + MINUTE)
    row = await _row(shop, order_id)
    assert (row.status, row.reminders_sent) == ("awaiting_payment", 1), vars(row)
    await shop.provider_paid(order_id, payment_id="sbx_pay_rm", provider="sandbox")
    await shop.settle()
    await shop.event("order.shipped", order_id, tracking_url="https://track.example/rm")
    await shop.settle()
    await shop.transition(order_id, "delivered")
    result = await shop.finish(workflow_ids.order(order_id))
    assert (result["status"], result["payment_status"]) == ("delivered", "fully_paid"), result
    row = await _row(shop, order_id)
    assert (row.status, row.payment_status, row.city) == ("delivered", "fully_paid", "Karachi")
    assert None not in (row.paid_at, row.delivered_at), vars(row)
    assert row.version == result["state"]["read_model_version"], vars(row)
    await shop.keep("order_read_model_partial_cod_paid_delivered", workflow_ids.order(order_id))


@scenario("order_read_model_cancelled_unpaid", "order_read_model_reopened_refunded")
async def order_read_model_reopened(shop: Recorder) -> None:
    """Partial COD never paid, kept in the read model: cancelled at its deadline and the run
    ends; the late payment reopens the order, which refunds it and writes the row again
    with a newer version."""
    order_id = await shop.place("partial_cod", currency="INR", total="1000.00")
    await shop.env.sleep(25 * HOUR)
    ended = await shop.finish(workflow_ids.order(order_id))
    assert ended["status"] == "cancelled", ended
    first = await _row(shop, order_id)
    assert (first.status, first.cancel_reason) == ("cancelled", "unpaid"), vars(first)
    await shop.keep("order_read_model_cancelled_unpaid", workflow_ids.order(order_id))
    await shop.provider_paid(order_id, payment_id="sbx_pay_rm_late", provider="sandbox")
    result = await shop.finish(workflow_ids.order(order_id))
    assert (result["status"], result["payment_status"]) == ("cancelled", "refunded"), result
    row = await _row(shop, order_id)
    assert (row.payment_status, row.refunded_amount) == ("refunded", Decimal(150)), vars(row)
    assert row.version > first.version, (row.version, first.version)
    await shop.keep("order_read_model_reopened_refunded", workflow_ids.order(order_id))


@scenario("order_rto_beside_its_delivery")
async def order_rto_beside_its_delivery(shop: Recorder) -> None:
    """COD, confirmed; the carrier's delivered and returned scans arrive before the order is
    shipped and wait for it. Shipped by ops, the order takes the delivery, and the return
    right after it in the same task is not dropped as stale: the delivered order becomes
    an RTO (patch ``order-rto-beside-delivery``) and the shop is told."""
    order_id = await shop.place("cod")
    await shop.settle()
    await shop.event("order.delivered", order_id)
    await shop.event("order.rto", order_id, reason="refused at the door")
    await shop.settle()
    await shop.transition(order_id, "shipped")
    result = await shop.finish(workflow_ids.order(order_id))
    assert (result["status"], result["state"]["reopened"]) == ("rto", 0), result
    history = [h["status"] for h in result["state"]["history"]]
    assert history[2:5] == ["shipped", "delivered", "rto"], history
    await shop.keep("order_rto_beside_its_delivery", workflow_ids.order(order_id))


def _every_channel(steps: list[dict[str, Any]], **rule: Any) -> dict[str, Any]:
    return {
        "trigger": {"event": "customer.created"},
        "steps": steps,
        "exit": {"events": ["order.placed", "unsubscribed"], "order_scope": "customer"},
        "quiet_hours": None,
        **rule,
    }


async def _signed_up(shop: Recorder, customer_id: str, phone: str) -> None:
    await shop.send(
        {
            "id": uid("evt"),
            "type": "customer.created",
            "occurred_at": _iso(await shop.now()),
            "customer": customer(customer_id, email=f"{customer_id}@example.com", phone=phone),
            "data": {},
        }
    )


@scenario("lifecycle_fallback_beside_bounced", reporting=True)
async def lifecycle_fallback_beside_bounced(shop: Recorder) -> None:
    """SMS or email, a minute later WhatsApp or email, on providers that report back: the
    SMS is reported undelivered after the WhatsApp went out and goes out by email; the
    WhatsApp is reported undelivered while the journey, out of steps, waits for its watch,
    and goes out by email before the journey completes and waits out its credit window."""
    customer_id, phone = await reachable_customer(shop, await shop.now())
    steps: list[dict[str, Any]] = [
        {"send": {"channels": ["sms", "email"], "template": "welcome"}},
        {"wait": "PT1M"},
        {"send": {"channels": ["whatsapp", "email"], "template": "welcome"}},
    ]
    rule_id = await shop.rule([customer_id], _every_channel(steps, attribution_window="PT1H"))
    await _signed_up(shop, customer_id, phone)
    workflow_id = workflow_ids.journey(rule_id, customer_id)
    await shop.env.sleep(2 * MINUTE)
    sms, whatsapp = await ledger(shop, workflow_id)
    await report_undelivered(shop, sms)
    await shop.env.sleep(MINUTE)
    await report_undelivered(shop, whatsapp)
    result = await shop.finish(workflow_id)
    assert (result["status"], result["exit_reason"]) == ("ended", "completed"), result
    statuses = [(m.channel, m.status) for m in await ledger(shop, workflow_id)]
    assert statuses == [
        ("sms", "failed"),
        ("whatsapp", "failed"),
        ("email", "sent"),
        ("email", "sent"),
    ], statuses
    await shop.keep("lifecycle_fallback_beside_bounced", workflow_id)
    await shop.archive(rule_id)


@scenario("lifecycle_fallback_beside_ended_by_order", reporting=True)
async def lifecycle_fallback_beside_ended_by_order(shop: Recorder) -> None:
    """SMS or email, then email a day later, on providers that report back: the customer
    orders a minute after the SMS, while its watch is open; the order ends the journey and
    its watch at once, with no fallback."""
    customer_id, phone = await reachable_customer(shop, await shop.now())
    steps: list[dict[str, Any]] = [
        {"send": {"channels": ["sms", "email"], "template": "welcome"}},
        {"wait": "P1D"},
        {"send": {"channels": ["email"], "template": "welcome"}},
    ]
    rule_id = await shop.rule([customer_id], _every_channel(steps))
    await _signed_up(shop, customer_id, phone)
    workflow_id = workflow_ids.journey(rule_id, customer_id)
    await shop.env.sleep(MINUTE)
    event = order_placed(cart_id=None, customer_id=customer_id, occurred_at=_iso(await shop.now()))
    event["customer"] = customer(customer_id, email=f"{customer_id}@example.com", phone=phone)
    await shop.send(event)
    result = await shop.finish(workflow_id)
    assert (result["status"], result["exit_reason"]) == ("ended", "ordered"), result
    channels = [m.channel for m in await ledger(shop, workflow_id)]
    assert channels == ["sms"], channels
    await shop.keep("lifecycle_fallback_beside_ended_by_order", workflow_id)
    await shop.archive(rule_id)


@scenario("lifecycle_outbox_not_watched")
async def lifecycle_outbox_not_watched(shop: Recorder) -> None:
    """Email, three seconds later SMS or email, on the outbox (which never reports): no
    watch is kept for the second step, and the journey completes with its last send, then
    waits out its credit window."""
    customer_id = await _reachable_customer(shop)
    steps: list[dict[str, Any]] = [
        {"send": {"channels": ["email"], "template": "welcome"}},
        {"wait": "PT3S"},
        {"send": {"channels": ["sms", "email"], "template": "welcome"}},
    ]
    rule_id = await shop.rule([customer_id], _every_channel(steps, attribution_window="PT1H"))
    await shop.send(
        {
            "id": uid("evt"),
            "type": "customer.created",
            "occurred_at": _iso(await shop.now()),
            "customer": customer(customer_id, email=f"{customer_id}@example.com"),
            "data": {},
        }
    )
    workflow_id = workflow_ids.journey(rule_id, customer_id)
    result = await shop.finish(workflow_id)
    assert (result["status"], result["exit_reason"]) == ("ended", "completed"), result
    sent = [(m.channel, m.provider) for m in await ledger(shop, workflow_id)]
    assert sent == [("email", "outbox"), ("sms", "outbox")], sent
    await shop.keep("lifecycle_outbox_not_watched", workflow_id)
    await shop.archive(rule_id)


async def _held_out_customer(shop: Recorder, definition: dict[str, Any]) -> tuple[str, str]:
    """A rule with a 50% holdout over a few candidates, and one of them it holds out (a
    reachable profile in Karachi): (rule id, customer id)."""
    candidates = [uid("c") for _ in range(24)]
    rule_id = await shop.rule(candidates, {**definition, "holdout_percent": 50})
    customer_id = next(c for c in candidates if admission.held_out(rule_id, c, 50))
    event = cart_updated(customer_id=customer_id, items=[], email=f"{customer_id}@example.com")
    async with shop.sessionmaker() as session, session.begin():
        await upsert_from_events(session, [EVENT_ADAPTER.validate_python(event)])
    return rule_id, customer_id


@scenario("cart_held_out_converted")
async def cart_held_out_converted(shop: Recorder) -> None:
    """The default rule with a 50% holdout, for a customer in the holdout group: the
    journey runs its steps and waits as the others do, every send is recorded in the
    ledger as held out and none goes out (no coupon either); an order for the cart on day 2
    converts it all the same."""
    rule_id, customer_id = await _held_out_customer(shop, _default_cart_rule())
    await shop.at_local(10)
    cart_id = await shop.cart(customer_id, items=[item("SKU1", 2, "4500.00")])
    await shop.env.sleep(25 * HOUR)
    await shop.order(customer_id, cart_id=cart_id, items=[item("SKU1", 2, "4500.00")])
    result = await shop.finish(workflow_ids.cart(cart_id))
    assert result["status"] == "converted", result
    assert await shop.cart_messages(cart_id) == []
    await shop.keep("cart_held_out_converted", workflow_ids.cart(cart_id))
    await shop.archive(rule_id)


@scenario("lifecycle_held_out_ended_by_order")
async def lifecycle_held_out_ended_by_order(shop: Recorder) -> None:
    """A welcome series with a 50% holdout, for a held-out customer: the first email is
    held out (ledger only), and the first order on day 1 ends the journey as it would any
    other."""
    rule_id, customer_id = await _held_out_customer(shop, WELCOME)
    await shop.at_local(10)
    await shop.send(
        {
            "id": uid("evt"),
            "type": "customer.created",
            "occurred_at": _iso(await shop.now()),
            "customer": customer(customer_id, email=f"{customer_id}@example.com"),
            "data": {},
        }
    )
    await shop.env.sleep(DAY)
    await shop.order(customer_id)
    workflow_id = workflow_ids.journey(rule_id, customer_id)
    result = await shop.finish(workflow_id)
    assert (result["status"], result["exit_reason"]) == ("ended", "ordered"), result
    rows = await ledger(shop, workflow_id)
    assert rows, "a held-out step is still in the ledger"
    assert all(m.status == "suppressed" for m in rows), rows
    await shop.keep("lifecycle_held_out_ended_by_order", workflow_id)
    await shop.archive(rule_id)


# --- running them -------------------------------------------------------------------------


Control = Callable[["Recorder", str, str], Awaitable[JourneyControlResult]]


async def _control(shop: Recorder, workflow_id: str, action: str) -> JourneyControlResult:
    """Ops' control as the first release sent it: the ``journey_control`` update."""
    handle = shop.env.client.get_workflow_handle(workflow_id)
    return await handle.execute_update(
        JOURNEY_CONTROL_UPDATE,
        JourneyControl.model_validate({"action": action, "by": "record_histories"}),
        result_type=JourneyControlResult,
    )


async def _signalled(shop: Recorder, workflow_id: str, action: str) -> JourneyControlResult:
    """Ops' control as the API sends it now: the signal, then reads until it shows."""
    done = await controls.control(
        shop.env.client,
        workflow_id,
        action,  # type: ignore[arg-type]
        by="record_histories",
        rpc_timeout=timedelta(seconds=30),
    )
    return done.result


@scenario("cart_paused_resumed_ended_by_ops")
async def cart_paused_resumed_ended_by_ops(shop: Recorder) -> None:
    """The default rule (with RuleVersion beside RuleId): the 1 h reminder, then ops pause
    the journey by update; the 24 h step falls due while paused and goes out once resumed
    at 30 h; then ops end the journey (``ended_by_ops``) and the idle cart expires after 30
    days."""
    await _cart_controlled(shop, _control, "cart_paused_resumed_ended_by_ops")


@scenario("cart_controlled_by_signal")
async def cart_controlled_by_signal(shop: Recorder) -> None:
    """The same, with ops' pause, resume and end sent as the signal."""
    await _cart_controlled(shop, _signalled, "cart_controlled_by_signal")


async def _cart_controlled(shop: Recorder, control: Control, name: str) -> None:
    customer_id = await _reachable_customer(shop)
    rule_id = await shop.rule([customer_id], _default_cart_rule())
    await shop.at_local(10)
    cart_id = await shop.cart(customer_id)
    workflow_id = workflow_ids.cart(cart_id)
    await shop.env.sleep(2 * HOUR)
    assert (await control(shop, workflow_id, "pause")).status == "paused"
    await shop.env.sleep(28 * HOUR)
    assert len(await shop.cart_messages(cart_id)) == 1
    assert (await control(shop, workflow_id, "resume")).status == "running"
    await shop.env.sleep(MINUTE)
    assert len(await shop.cart_messages(cart_id)) == 2
    ended = await control(shop, workflow_id, "end")
    assert (ended.status, ended.exit_reason) == ("ended", "ended_by_ops"), ended
    result = await shop.finish(workflow_id)
    assert result["status"] == "expired", result
    assert len(await shop.cart_messages(cart_id)) == 2
    await shop.keep(name, workflow_id)
    await shop.archive(rule_id)


@scenario("lifecycle_paused_resumed_ended_by_ops")
async def lifecycle_paused_resumed_ended_by_ops(shop: Recorder) -> None:
    """A welcome series (with RuleVersion beside RuleId): the first email, a pause (by
    update) during the two-day wait, the second email once resumed on day 3, then ended by
    ops."""
    await _lifecycle_controlled(shop, _control, "lifecycle_paused_resumed_ended_by_ops")


@scenario("lifecycle_controlled_by_signal")
async def lifecycle_controlled_by_signal(shop: Recorder) -> None:
    """The same, with ops' pause, resume and end sent as the signal."""
    await _lifecycle_controlled(shop, _signalled, "lifecycle_controlled_by_signal")


async def _lifecycle_controlled(shop: Recorder, control: Control, name: str) -> None:
    customer_id = uid("c")
    rule_id = await shop.rule([customer_id], WELCOME)
    await shop.at_local(10)
    await shop.send(
        {
            "id": uid("evt"),
            "type": "customer.created",
            "occurred_at": _iso(await shop.now()),
            "customer": customer(customer_id, email=f"{customer_id}@example.com"),
            "data": {},
        }
    )
    workflow_id = workflow_ids.journey(rule_id, customer_id)
    await shop.env.sleep(HOUR)
    assert (await control(shop, workflow_id, "pause")).status == "paused"
    await shop.env.sleep(3 * DAY)
    assert (await control(shop, workflow_id, "resume")).status == "running"
    await shop.env.sleep(MINUTE)
    ended = await control(shop, workflow_id, "end")
    assert (ended.status, ended.exit_reason) == ("ended", "ended_by_ops"), ended
    result = await shop.finish(workflow_id)
    assert (result["status"], result["exit_reason"]) == ("ended", "ended_by_ops"), result
    assert len(result["journey"]["sent"]) == 2, result
    await shop.keep(name, workflow_id)
    await shop.archive(rule_id)


@scenario("order_partial_cod_payment_attributes_paid")
async def order_partial_cod_payment_attributes_paid(shop: Recorder) -> None:
    """Partial COD with PaymentType and PaymentStatus kept current: pending, paid upfront
    (partially_paid), then delivered (fully_paid)."""
    order_id = await shop.place("partial_cod", currency="INR", total="1000.00")
    await shop.settle()
    await shop.provider_paid(order_id, payment_id="sbx_pay_attrs", provider="sandbox")
    await shop.settle()
    for to in ("packed", "shipped", "delivered"):
        await shop.transition(order_id, to)
    result = await shop.finish(workflow_ids.order(order_id))
    assert (result["status"], result["payment_status"]) == ("delivered", "fully_paid"), result
    described = await shop.handle(order_id).describe()
    attributes = described.typed_search_attributes
    assert attributes.get(search_attributes.PAYMENT_TYPE) == "partial_cod"
    assert attributes.get(search_attributes.PAYMENT_STATUS) == "fully_paid"
    await shop.keep("order_partial_cod_payment_attributes_paid", workflow_ids.order(order_id))


# --- running them -------------------------------------------------------------------------


async def _whatsapp_content_template(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """The shop's approved WhatsApp template for the default rule's step 2, so WhatsApp is
    used outside the 24-hour window as in production."""
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


async def record(names: list[str], out: Path, *, overwrite: bool) -> list[Path]:
    """Run the scenarios and write their histories; returns the files written."""

    def missing(files: tuple[str, ...]) -> list[str]:
        return [f for f in files if overwrite or not (out / f"{f}.json").exists()]

    todo: list[tuple[str, list[str], Scenario]] = []
    for name in names:
        files, fn = SCENARIOS[name]
        if missing(files):
            todo.append((name, missing(files), fn))
        else:
            print(f"{name}: {', '.join(files)} already recorded; left as it is")
    if not todo:
        return []

    admin, server = _admin_url()
    admin = _plain(admin)
    database = f"sutra_record_{uuid.uuid4().hex[:8]}"
    url = create_database(admin, database)
    written: list[Path] = []
    try:
        upgrade(url)
        env = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=temporal_test_server(),
            data_converter=pydantic_data_converter,
        )
        try:
            await env.client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=env.client.namespace,
                    search_attributes=search_attributes.registration(),
                )
            )
            settings = Settings(
                env=Environment.test,
                database_url=url,
                temporal_task_queue=f"record-{uuid.uuid4().hex[:8]}",
                fanout_batch_size=1,
            )
            engine = create_engine(settings)
            sessionmaker = create_sessionmaker(engine)
            await _whatsapp_content_template(sessionmaker)
            try:
                async with contextlib.AsyncExitStack() as stack:
                    await stack.enter_async_context(
                        build_worker(
                            env.client, settings.temporal_task_queue, sessionmaker, settings
                        )
                    )
                    reporting = settings
                    if any(name in REPORTING for name, _, _ in todo):
                        reporting = _reporting(stack, url)
                        await stack.enter_async_context(
                            build_worker(
                                env.client, reporting.temporal_task_queue, sessionmaker, reporting
                            )
                        )
                    for name, wanted, fn in todo:
                        chosen = reporting if name in REPORTING else settings
                        shop = Recorder(env, chosen, sessionmaker)
                        began = time.monotonic()
                        try:
                            await fn(shop)
                        finally:
                            await shop.terminate_all()
                        for file in wanted:
                            written.append(_write(out / f"{file}.json", shop.histories[file]))
                        took = time.monotonic() - began
                        print(f"{name}: recorded {', '.join(wanted)} ({took:.0f} s)")
            finally:
                await engine.dispose()
        finally:
            await env.shutdown()
    finally:
        drop_database(admin, database)
        if server is not None:
            server.cleanup()
    return written


def _reporting(stack: contextlib.AsyncExitStack, database_url: str) -> Settings:
    """Settings, on a task queue of their own, whose providers are the fake SendGrid and
    Twilio, started here and stopped with ``stack``."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the fakes' request log
    twilio, sendgrid = FakeTwilio().start(), FakeSendGrid().start()
    stack.callback(twilio.stop)
    stack.callback(sendgrid.stop)
    return reporting_settings(
        database_url, f"record-reporting-{uuid.uuid4().hex[:8]}", twilio, sendgrid
    )


def _write(path: Path, history: WorkflowHistory) -> Path:
    text = history.to_json()
    if len(text.encode()) > MAX_BYTES:
        raise SystemExit(f"{path.name}: {len(text.encode())} bytes; record a shorter scenario")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    if path.parent == HISTORIES:
        # This type's histories now stand for today's code (tests/workflow_sources.py).
        workflow_type = history.events[0].workflow_execution_started_event_attributes
        name = workflow_type.workflow_type.name
        workflow_sources.record(name, _WORKFLOW_CLASSES[name], path.name)
    return path


_WORKFLOW_CLASSES: dict[str, type] = {
    str(temporal_workflow._Definition.must_from_class(cls).name): cls for cls in registry.ALL
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--out", type=Path, default=HISTORIES, help="where to write")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing files (only for histories not yet committed)",
    )
    parser.add_argument(
        "--acknowledge",
        metavar="WORKFLOW_TYPE",
        action="append",
        default=[],
        help="a change to this type's code that issues the same commands (docs, query "
        "handlers, details texts): record its new source hash without a new history",
    )
    args = parser.parse_args(argv)
    if args.acknowledge:
        for name in args.acknowledge:
            if name not in _WORKFLOW_CLASSES:
                parser.error(f"unknown workflow type {name!r}: {', '.join(_WORKFLOW_CLASSES)}")
            workflow_sources.record(name, _WORKFLOW_CLASSES[name], None)
            print(f"{name}: source hash recorded; tests/test_replay.py proves the rest")
        return
    if args.list:
        for name, (files, fn) in SCENARIOS.items():
            print(f"{name}: {', '.join(f + '.json' for f in files)}")
            print(f"    {' '.join((fn.__doc__ or '').split())}")
        return
    by_file = {f: name for name, (files, _) in SCENARIOS.items() for f in files}
    chosen = [by_file.get(n.removesuffix(".json"), n) for n in args.scenarios]
    unknown = [n for n in chosen if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; see --list")
    asyncio.run(record(chosen or list(SCENARIOS), args.out, overwrite=args.overwrite))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main(sys.argv[1:])
