"""Events for orders and carts whose workflow has ended: never a fresh run that waits a
week for a placement that happened long ago. The event is told to the ended workflow
(``delivered_to_closed`` on the event's route, with the reason), and the order acts on what
it still cares about, as its own history says: money arriving after a cancellation is
refunded, a parcel scanned delivered can still come back, a refund the shop made is
recorded. Journeys whose entry conditions the customer cannot meet start no workflow.

On the time-skipping server, events going in through intake and the dispatcher's delivery
code (tests/skipping_shop.py), payments through the real SDKs against the fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from contracts import workflow_ids
from contracts.rules import RuleDefinition
from db.models import EventRoute, Rule
from services.journeys import rules
from tests.factories import cart_updated, customer, order_placed, uid
from tests.order_shop import OrderShop, ShopEndpoint, order_settings
from tests.providers.fake_payments import FakeRazorpay, FakeStripe
from worker import build_worker

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture
async def shop(
    time_skipping: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_razorpay: FakeRazorpay,
    fake_stripe: FakeStripe,
    shop_endpoint: ShopEndpoint,
) -> AsyncIterator[OrderShop]:
    settings = order_settings(database_url, task_queue, fake_razorpay, fake_stripe, shop_endpoint)
    shop = OrderShop(time_skipping, settings, sessionmaker)
    async with build_worker(time_skipping.client, task_queue, sessionmaker, settings):
        yield shop
        await shop.terminate_all()


async def _route(shop: OrderShop, event_id: str) -> EventRoute:
    async with shop.sessionmaker() as session:
        [route] = (
            await session.scalars(select(EventRoute).where(EventRoute.event_id == event_id))
        ).all()
    return route


async def _latest_run(shop: OrderShop, workflow_id: str) -> str | None:
    """The id of the workflow's latest run (the time-skipping server lists no workflows)."""
    try:
        return (await shop.env.client.get_workflow_handle(workflow_id).describe()).run_id
    except RPCError:
        return None


async def _ended(shop: OrderShop, order_id: str) -> Any:
    """Wait for the order's run to end (its last messages out) and return its result."""
    await shop.env.sleep(HOUR)
    handle = shop.handle(order_id)
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    return await handle.result()


async def test_a_payment_after_the_cancelled_order_ended_is_refunded_once(
    shop: OrderShop, fake_razorpay: FakeRazorpay
):
    order_id = await shop.place("partial_cod", currency="INR", total="1000.00")
    await shop.env.sleep(25 * HOUR)  # unpaid at the 24 h deadline: cancelled
    ended = await _ended(shop, order_id)
    assert ended["status"] == "cancelled"

    # The customer's payment went through at Razorpay just as the link was cancelled.
    link = await shop.link(order_id)
    paid = await shop.provider_paid(
        order_id, payment_id="pay_late1", provider="razorpay", event_id="razorpay:late1"
    )
    assert paid == "accepted"
    await shop.settle()

    route = await _route(shop, "razorpay:late1")
    assert route.status == "delivered_to_closed"
    assert route.detail == "order ended cancelled; reopened for payment.captured"
    [refund] = fake_razorpay.calls_to("POST", "/v1/payments/pay_late1/refund")
    assert refund.body["amount"] == int(link.amount * 100)
    state = await shop.state(order_id)
    assert (state.status, state.payment_status, state.reopened) == ("cancelled", "refunded", 1)

    # Told again (a webhook retry under another id): the payment is refunded only once.
    await shop.provider_paid(
        order_id, payment_id="pay_late1", provider="razorpay", event_id="razorpay:late1-again"
    )
    await shop.env.sleep(HOUR)
    assert len(fake_razorpay.calls_to("POST", r"/v1/payments/\w+/refund")) == 1


async def test_a_late_event_for_a_delivered_order_starts_nothing_and_says_so(shop: OrderShop):
    order_id = await shop.place("cod")
    await shop.settle()
    for step in ("shipped", "delivered"):
        await shop.transition(order_id, step)
    ended = await _ended(shop, order_id)
    assert ended["status"] == "delivered"
    run = await _latest_run(shop, workflow_ids.order(order_id))

    event_id = uid("evt")
    assert await shop.event("order.shipped", order_id, event_id=event_id) == "accepted"
    route = await _route(shop, event_id)
    assert (route.kind, route.status) == ("signal", "delivered_to_closed")
    assert route.detail == "order ended delivered: order.shipped changes nothing"
    assert await _latest_run(shop, workflow_ids.order(order_id)) == run  # no fresh run waiting


async def test_a_delivered_cod_order_that_comes_back_becomes_rto_and_the_shop_is_told(
    shop: OrderShop, shop_endpoint: ShopEndpoint
):
    order_id = await shop.place("cod", total="4500.00")
    await shop.settle()
    for step in ("shipped", "delivered"):
        await shop.transition(order_id, step)
    ended = await _ended(shop, order_id)
    assert (ended["status"], ended["payment_status"]) == ("delivered", "fully_paid")
    run = await _latest_run(shop, workflow_ids.order(order_id))

    await shop.event("order.rto", order_id, reason="customer refused at the door")
    await shop.settle()

    state = await shop.state(order_id)
    assert (state.status, state.payment_status) == ("rto", "pending")
    assert (state.paid_amount, state.remaining_amount) == (Decimal("0.00"), Decimal("4500.00"))
    assert state.rto_reason == "customer refused at the door"
    await shop.env.sleep(HOUR)
    assert "order.rto_after_delivery" in shop_endpoint.types(order_id)
    assert await _latest_run(shop, workflow_ids.order(order_id)) not in (run, None)


async def test_a_refund_the_shop_made_after_delivery_is_recorded_on_the_ended_order(
    shop: OrderShop,
):
    order_id = await shop.place("prepaid", total="4500.00", payment_status="fully_paid")
    await shop.settle()
    for step in ("shipped", "delivered"):
        await shop.transition(order_id, step)
    assert (await _ended(shop, order_id))["payment_status"] == "fully_paid"

    for _ in range(2):  # told twice: recorded once
        await shop.event(
            "payment.refunded",
            order_id,
            event_id=uid("evt"),
            amount="4500.00",
            currency="PKR",
            refund_id="rfnd_shop_1",
            reason="returned within 7 days",
        )
        await shop.settle()

    state = await shop.state(order_id)
    assert (state.status, state.payment_status) == ("delivered", "refunded")
    assert state.refunds_reported == {"rfnd_shop_1": Decimal("4500.00")}
    assert [h.note for h in state.history if h.note and "by the shop" in h.note] == [
        "refunded 4500.00 by the shop (rfnd_shop_1)"
    ]


async def test_a_payment_while_the_cancelled_order_finishes_is_refunded_by_its_own_run(
    shop: OrderShop, fake_razorpay: FakeRazorpay
):
    order_id = await shop.place("partial_cod", currency="INR", total="1000.00")
    await shop.env.sleep(25 * HOUR)
    state = await shop.state(order_id)
    assert state.status == "cancelled"
    # Still running (its cancellation message is going out): the same run refunds.
    await shop.provider_paid(order_id, payment_id="pay_race1", provider="razorpay")
    await shop.settle()
    assert len(fake_razorpay.calls_to("POST", "/v1/payments/pay_race1/refund")) == 1
    run = await _latest_run(shop, workflow_ids.order(order_id))
    await _ended(shop, order_id)
    assert await _latest_run(shop, workflow_ids.order(order_id)) == run


async def test_a_converted_cart_stays_converted_and_an_expired_one_lives_again(
    shop: OrderShop,
):
    cid = uid("c")
    bought = cart_updated(customer_id=cid, occurred_at=await _now(shop))
    cart_id = bought["data"]["cart_id"]
    await shop.send(bought)
    await shop.send(order_placed(customer_id=cid, cart_id=cart_id, occurred_at=await _now(shop)))
    await shop.env.sleep(HOUR)
    assert (await shop.env.client.get_workflow_handle(workflow_ids.cart(cart_id)).result())[
        "status"
    ] == "converted"

    run = await _latest_run(shop, workflow_ids.cart(cart_id))
    late = cart_updated(customer_id=cid, cart_id=cart_id, occurred_at=await _now(shop))
    await shop.send(late)
    route = await _route(shop, late["id"])
    assert route.status == "delivered_to_closed"
    assert route.detail == "cart converted: cart.updated changes nothing"
    assert await _latest_run(shop, workflow_ids.cart(cart_id)) == run

    idle = cart_updated(customer_id=cid, occurred_at=await _now(shop))
    idle_cart = idle["data"]["cart_id"]
    await shop.send(idle)
    await shop.env.sleep(31 * DAY)  # past SUTRA_CART_EXPIRE_AFTER
    handle = shop.env.client.get_workflow_handle(workflow_ids.cart(idle_cart))
    assert (await handle.result())["status"] == "expired"
    run = await _latest_run(shop, workflow_ids.cart(idle_cart))
    back = cart_updated(customer_id=cid, cart_id=idle_cart, occurred_at=await _now(shop))
    await shop.send(back)
    assert (await _route(shop, back["id"])).status == "delivered"
    assert await _latest_run(shop, workflow_ids.cart(idle_cart)) not in (run, None)
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING


async def test_a_journey_whose_conditions_the_customer_cannot_meet_starts_no_workflow(
    shop: OrderShop,
):
    prefix = uid("vip")
    definition = RuleDefinition.model_validate(
        {
            "name": "Welcome VIPs",
            "trigger": {"event": "customer.created"},
            "conditions": {"field": "customer.id", "op": "starts_with", "value": prefix},
            "steps": [{"send": {"channels": ["email"], "template": "welcome_1"}}],
        }
    )
    async with shop.sessionmaker() as session, session.begin():
        rule, _ = await rules.create(
            session, definition, rules.Actor(key_id=None, name="t"), status="active"
        )
        rule_id = rule.id
    try:
        outsider, vip = uid("c"), f"{prefix}_1"
        for cid in (outsider, vip):
            await shop.send(
                {
                    "id": uid("evt"),
                    "type": "customer.created",
                    "occurred_at": await _now(shop),
                    "customer": customer(cid),
                    "data": {},
                }
            )
        async with shop.sessionmaker() as session:
            started = (
                await session.scalars(
                    select(EventRoute.workflow_id).where(
                        EventRoute.workflow_id.like(f"journey/{rule_id}/%")
                    )
                )
            ).all()
        assert started == [workflow_ids.journey(rule_id, vip)]
        assert await _latest_run(shop, workflow_ids.journey(rule_id, outsider)) is None
    finally:
        async with shop.sessionmaker() as session, session.begin():
            row = await session.get(Rule, rule_id)
            assert row is not None
            row.status = "archived"


async def _now(shop: OrderShop) -> str:
    return (await shop.now()).isoformat()
