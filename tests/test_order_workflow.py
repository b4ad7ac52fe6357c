"""Orders on the time-skipping server, through every terminal state of each payment type:
partial COD against Razorpay (INR) and Stripe (USD, JPY), prepaid, and COD with a reply;
real SDKs against the fake providers, the shop's webhook endpoint a local server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from contracts import search_attributes
from db.models import Refund
from tests.order_shop import OrderShop, ShopEndpoint, order_settings
from tests.providers.fake_payments import (
    FakeRazorpay,
    FakeStripe,
)
from worker import build_worker

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


@contextlib.asynccontextmanager
async def _shop(
    env: WorkflowEnvironment,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[OrderShop]:
    shop = OrderShop(env, settings, sessionmaker)
    async with build_worker(env.client, settings.temporal_task_queue, sessionmaker, settings):
        yield shop
    await shop.terminate_all()


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
    async with _shop(time_skipping, settings, sessionmaker) as shop:
        yield shop


# --- partial COD -----------------------------------------------------------------------


async def test_partial_cod_paid_after_the_second_reminder_is_confirmed_and_never_reminded_again(
    shop: OrderShop, fake_razorpay: FakeRazorpay
):
    order_id = await shop.place("partial_cod", currency="INR", total="2999.99")
    await shop.settle()

    [create] = fake_razorpay.calls_to("POST", "/v1/payment_links")
    assert create.body["amount"] == 45000  # 15% of ₹2,999.99 = ₹449.9985, up to ₹450.00
    assert create.body["currency"] == "INR"
    assert create.body["reference_id"] == f"{order_id}-upfront"
    placed_at = (await shop.state(order_id)).placed_at
    assert placed_at is not None  # the order's occurred_at
    assert create.body["expire_by"] == int((placed_at + 24 * HOUR).timestamp())
    state = await shop.state(order_id)
    assert (state.status, state.payment_status) == ("awaiting_payment", "pending")
    assert (state.upfront_amount, state.remaining_amount) == (Decimal("450.00"), Decimal("2549.99"))
    assert state.payment_link is not None
    assert state.payment_link.startswith("https://rzp.io/i/")

    await shop.env.sleep(2 * HOUR + MINUTE)  # reminders at 15 min and 2 h
    assert await shop.templates(order_id) == [
        "cod_payment_request",
        "cod_payment_reminder",
        "cod_payment_reminder",
    ]
    link = await shop.link(order_id)
    fake_razorpay.pay(link.link_id or "")
    await shop.provider_paid(order_id, payment_id="pay_upfront1", provider="razorpay")
    await shop.settle()

    state = await shop.state(order_id)
    assert (state.status, state.payment_status) == ("confirmed", "partially_paid")
    assert state.paid_amount == Decimal("450.00")
    await shop.env.sleep(30 * HOUR)  # past the 12 h reminder and the 24 h deadline
    assert await shop.templates(order_id) == [
        "cod_payment_request",
        "cod_payment_reminder",
        "cod_payment_reminder",
        "order_confirmation",
    ]
    state = await shop.state(order_id)
    assert state.status == "confirmed"
    assert fake_razorpay.calls_to("POST", r"/v1/payment_links/\w+/cancel") == []


async def test_unpaid_partial_cod_is_cancelled_at_the_deadline_link_cancelled_and_shop_told(
    shop: OrderShop, fake_razorpay: FakeRazorpay, shop_endpoint: ShopEndpoint
):
    order_id = await shop.place("partial_cod", currency="INR", total="1000.00")
    await shop.env.sleep(24 * HOUR - MINUTE)
    assert (await shop.state(order_id)).status == "awaiting_payment"

    await shop.env.sleep(2 * MINUTE)

    state = await shop.state(order_id)
    assert (state.status, state.cancel_reason) == ("cancelled", "unpaid")
    link = await shop.link(order_id)
    assert fake_razorpay.calls_to("POST", f"/v1/payment_links/{link.link_id}/cancel") != []
    assert fake_razorpay.links[link.link_id or ""]["status"] == "cancelled"
    assert link.status == "cancelled"
    assert await shop.templates(order_id) == [
        "cod_payment_request",
        "cod_payment_reminder",
        "cod_payment_reminder",
        "cod_payment_reminder",
        "order_cancelled",
    ]
    assert shop_endpoint.types(order_id) == ["order.cancelled"]
    assert shop_endpoint.notices[-1]["data"]["reason"] == "unpaid"
    assert shop_endpoint.bad_signatures == 0


async def test_cancelling_after_the_upfront_payment_refunds_it_exactly_once(
    shop: OrderShop, fake_razorpay: FakeRazorpay, sessionmaker: async_sessionmaker[AsyncSession]
):
    order_id = await shop.place("partial_cod", currency="INR", total="1000.00")
    await shop.settle()
    link = await shop.link(order_id)
    fake_razorpay.pay(link.link_id or "")
    await shop.provider_paid(order_id, payment_id="pay_refundme1", provider="razorpay")
    # The provider retries its webhook; the backend also reports the capture.
    await shop.provider_paid(order_id, payment_id="pay_refundme1", provider="razorpay")
    await shop.settle()

    state = await shop.transition(order_id, "cancelled", reason="customer asked")

    assert (state.status, state.payment_status) == ("cancelled", "refunded")
    [refund] = fake_razorpay.calls_to("POST", "/v1/payments/pay_refundme1/refund")
    assert refund.body["amount"] == 15000
    async with sessionmaker() as session:
        row = await session.get(Refund, f"{order_id}:refund:pay_refundme1")
    assert row is not None
    assert row.status == "done"
    with pytest.raises((WorkflowUpdateFailedError, RPCError)):
        await shop.transition(order_id, "cancelled")
    assert len(fake_razorpay.calls_to("POST", r"/v1/payments/\w+/refund")) == 1
    await shop.settle()
    assert "order_cancelled" in await shop.templates(order_id)


async def test_a_delivered_partial_cod_order_is_fully_paid_even_when_events_arrive_out_of_order(
    shop: OrderShop, fake_razorpay: FakeRazorpay
):
    order_id = await shop.place("partial_cod", currency="INR", total="1000.00")
    await shop.settle()
    await shop.provider_paid(order_id, payment_id="pay_deliver1", provider="razorpay")
    await shop.event("order.packed", order_id)
    await shop.event("order.delivered", order_id)  # overtook order.shipped
    await shop.settle()
    assert (await shop.state(order_id)).status == "packed"

    await shop.event("order.shipped", order_id, tracking_url="https://track.example/1")
    await shop.event("order.packed", order_id)  # stale: the order is past it
    await shop.settle()

    state = await shop.state(order_id)
    assert (state.status, state.payment_status) == ("delivered", "fully_paid")
    assert (state.paid_amount, state.remaining_amount) == (Decimal("1000.00"), Decimal("0.00"))
    assert [h.status for h in state.history if h.by.startswith("event:")] == [
        "confirmed",
        "packed",
        "shipped",
        "delivered",
    ]
    assert await shop.templates(order_id) == [
        "cod_payment_request",
        "order_confirmation",
        "order_shipped",
        "order_delivered",
    ]


async def test_a_retried_link_activity_creates_no_second_link(
    shop: OrderShop, fake_razorpay: FakeRazorpay, fake_stripe: FakeStripe
):
    fake_razorpay.lose_next_creates = 1  # Razorpay made the link; its answer was lost
    fake_stripe.lose_next_creates = 1
    inr = await shop.place("partial_cod", currency="INR", total="1000.00")
    usd = await shop.place("partial_cod", currency="USD", total="80.00")
    await shop.env.sleep(MINUTE)

    assert len(fake_razorpay.calls_to("POST", "/v1/payment_links")) == 1
    assert len(fake_razorpay.calls_to("GET", "/v1/payment_links")) == 1  # found by reference
    assert len(fake_razorpay.links) == 1
    creates = fake_stripe.calls_to("POST", "/v1/checkout/sessions")
    assert len(creates) == 2
    assert creates[0].headers["Idempotency-Key"] == creates[1].headers["Idempotency-Key"]
    assert len(fake_stripe.sessions) == 1
    [session] = fake_stripe.sessions.values()
    assert (session["amount_total"], session["currency"]) == (1200, "usd")
    assert session["client_reference_id"] == f"{usd}-upfront"
    inr_state, usd_state = await shop.state(inr), await shop.state(usd)
    assert inr_state.payment_link == next(iter(fake_razorpay.links.values()))["short_url"]
    assert usd_state.payment_link == session["url"]


async def test_stripe_partial_cod_in_yen_charges_whole_yen(
    shop: OrderShop, fake_stripe: FakeStripe
):
    order_id = await shop.place("partial_cod", currency="JPY", total="12345")
    await shop.settle()

    [session] = fake_stripe.sessions.values()
    assert (session["amount_total"], session["currency"]) == (1852, "jpy")  # ¥1,851.75 ↑
    state = await shop.state(order_id)
    assert (state.upfront_amount, state.remaining_amount) == (Decimal("1852"), Decimal("10493"))

    fake_stripe.pay(session["id"])
    await shop.provider_paid(order_id, payment_id="pi_yen1", provider="stripe")
    await shop.settle()
    state = await shop.transition(order_id, "cancelled")
    assert state.payment_status == "refunded"
    [refund] = fake_stripe.calls_to("POST", "/v1/refunds")
    assert (refund.body["amount"], refund.body["payment_intent"]) == ("1852", "pi_yen1")


# --- prepaid ---------------------------------------------------------------------------


async def test_prepaid_paid_then_shipped_and_delivered(shop: OrderShop):
    order_id = await shop.place("prepaid", currency="PKR", total="4500.00")
    await shop.settle()
    assert (await shop.state(order_id)).status == "awaiting_payment"

    await shop.event(
        "payment.captured", order_id, amount="4500.00", currency="PKR", payment_id="pay_x1"
    )
    await shop.settle()
    assert (await shop.state(order_id)).payment_status == "fully_paid"
    for to in ("packed", "shipped", "out_for_delivery", "delivered"):
        await shop.transition(order_id, to)
    await shop.settle()

    state = await shop.state(order_id)
    assert (state.status, state.payment_status) == ("delivered", "fully_paid")
    assert await shop.templates(order_id) == [
        "order_confirmation",
        "order_shipped",
        "order_out_for_delivery",
        "order_delivered",
    ]


async def test_prepaid_payment_failure_cancels_and_tells_the_customer(
    shop: OrderShop, shop_endpoint: ShopEndpoint
):
    failed = await shop.place("prepaid", total="4500.00")
    silent = await shop.place("prepaid", total="4500.00")
    await shop.settle()

    await shop.event(
        "payment.failed", failed, amount="4500.00", currency="PKR", reason="card declined"
    )
    await shop.env.sleep(2 * HOUR + MINUTE)

    for order_id in (failed, silent):
        state = await shop.state(order_id)
        assert (state.status, state.payment_status) == ("cancelled", "failed")
        assert state.cancel_reason == "payment_failed"
        assert await shop.templates(order_id) == ["order_cancelled"]
        assert shop_endpoint.types(order_id) == ["order.cancelled"]


# --- cash on delivery ------------------------------------------------------------------


async def test_cod_is_confirmed_at_once_and_delivered_fully_paid_or_returned(shop: OrderShop):
    delivered = await shop.place("cod")
    returned = await shop.place("cod")
    await shop.settle()
    for order_id in (delivered, returned):
        assert (await shop.state(order_id)).status == "confirmed"
        await shop.transition(order_id, "shipped", tracking_url="https://track.example/x")

    await shop.transition(delivered, "delivered")
    await shop.event("order.rto", returned, reason="customer refused the parcel")
    await shop.settle()

    state = await shop.state(delivered)
    assert (state.status, state.payment_status) == ("delivered", "fully_paid")
    state = await shop.state(returned)
    assert (state.status, state.payment_status) == ("rto", "pending")
    assert state.rto_reason == "customer refused the parcel"


async def test_impossible_transitions_are_refused_and_change_nothing(shop: OrderShop):
    order_id = await shop.place("cod")
    await shop.settle()

    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await shop.transition(order_id, "delivered")

    assert "cannot go from confirmed to delivered" in str(refused.value.cause)
    state = await shop.state(order_id)
    assert state.status == "confirmed"
    assert [h.status for h in state.history][-1] == "confirmed"


async def test_a_confirmed_order_not_shipped_in_time_is_flagged_for_ops(
    shop: OrderShop, shop_endpoint: ShopEndpoint
):
    order_id = await shop.place("cod")
    await shop.env.sleep(24 * HOUR + MINUTE)

    state = await shop.state(order_id)
    assert state.sla_breached is True
    assert shop_endpoint.types(order_id) == ["order.sla_breached"]
    description = await shop.handle(order_id).describe()
    assert description.typed_search_attributes.get(search_attributes.SLA_BREACHED) == "true"


@pytest.fixture
async def confirming_shop(
    time_skipping: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_razorpay: FakeRazorpay,
    fake_stripe: FakeStripe,
    shop_endpoint: ShopEndpoint,
) -> AsyncIterator[OrderShop]:
    settings = order_settings(
        database_url,
        task_queue,
        fake_razorpay,
        fake_stripe,
        shop_endpoint,
        cod_confirmation=True,
        cod_no_reply="cancel",
        cod_prepay_offer_percent=Decimal(5),
    )
    async with _shop(time_skipping, settings, sessionmaker) as shop:
        yield shop


async def test_cod_confirmation_by_reply_yes_no_or_silence(
    confirming_shop: OrderShop, fake_razorpay: FakeRazorpay
):
    shop = confirming_shop
    yes = await shop.place("cod", currency="INR", total="1000.00")
    no = await shop.place("cod", currency="INR", total="1000.00")
    silent = await shop.place("cod", currency="INR", total="1000.00")
    await shop.settle()
    assert (await shop.state(yes)).status == "placed"
    # The offer: pay the whole order online now for 5% less.
    offers = fake_razorpay.calls_to("POST", "/v1/payment_links")
    assert {c.body["amount"] for c in offers} == {95000}

    await shop.reply(yes, "Yes")
    await shop.reply(no, "no")
    await shop.env.sleep(24 * HOUR + MINUTE)

    assert (await shop.state(yes)).status == "confirmed"
    assert ((await shop.state(no)).status, (await shop.state(no)).cancel_reason) == (
        "cancelled",
        "customer_declined",
    )
    assert ((await shop.state(silent)).cancel_reason) == "no_reply"
    assert (await shop.templates(yes))[0] == "order_cod_confirmation"
    # Every unused offer link was cancelled.
    assert len(fake_razorpay.calls_to("POST", r"/v1/payment_links/\w+/cancel")) == 3


async def test_cod_customer_taking_the_prepay_offer_becomes_prepaid(
    confirming_shop: OrderShop, fake_razorpay: FakeRazorpay
):
    shop = confirming_shop
    order_id = await shop.place("cod", currency="INR", total="1000.00")
    await shop.settle()
    link = await shop.link(order_id)
    assert link.purpose == "offer"

    await shop.provider_paid(order_id, payment_id="pay_offer1", provider="razorpay")
    await shop.settle()

    state = await shop.state(order_id)
    assert (state.status, state.payment_type, state.payment_status) == (
        "confirmed",
        "prepaid",
        "fully_paid",
    )
    assert (state.paid_amount, state.discount) == (Decimal("950.00"), Decimal("50.00"))


async def test_a_short_or_foreign_currency_payment_does_not_confirm_a_prepaid_order(
    shop: OrderShop,
):
    order_id = await shop.place("prepaid", currency="PKR", total="4500.00")
    await shop.settle()

    await shop.event("payment.captured", order_id, amount="450.00", currency="PKR")
    await shop.event("payment.captured", order_id, amount="4500.00", currency="USD")
    await shop.settle()

    state = await shop.state(order_id)
    assert (state.status, state.payment_status) == ("awaiting_payment", "pending")
    notes = [h.note or "" for h in state.history]
    assert any("less than the 4500.00 due" in n for n in notes)
    assert any("in USD, not PKR" in n for n in notes)


async def test_every_payment_type_reaches_every_terminal_state(shop: OrderShop):
    """delivered, cancelled and rto for prepaid, cod and partial_cod (the upfront of a
    returned partial-COD parcel is kept: covering the return is what it is for)."""
    ended: dict[tuple[str, str], str] = {}
    for payment_type in ("prepaid", "cod", "partial_cod"):
        for terminal in ("delivered", "cancelled", "rto"):
            order_id = await shop.place(payment_type, currency="PKR", total="4500.00")
            await shop.settle()
            if payment_type == "prepaid":
                await shop.event(
                    "payment.captured",
                    order_id,
                    amount="4500.00",
                    currency="PKR",
                    payment_id=f"pi_{order_id}",
                    provider="stripe",
                )
            elif payment_type == "partial_cod":
                await shop.event(
                    "payment.captured",
                    order_id,
                    amount="675.00",
                    currency="PKR",
                    payment_id=f"pay_{order_id}",
                    provider="stripe",
                )
            await shop.settle()
            if terminal == "cancelled":
                await shop.transition(order_id, "cancelled")
            else:
                await shop.transition(order_id, "shipped")
                await shop.event(f"order.{terminal}", order_id, reason="refused at the door")
                await shop.settle()
            state = await shop.state(order_id)
            ended[(payment_type, terminal)] = f"{state.status}/{state.payment_status}"

    assert ended == {
        ("prepaid", "delivered"): "delivered/fully_paid",
        ("prepaid", "cancelled"): "cancelled/refunded",
        ("prepaid", "rto"): "rto/fully_paid",
        ("cod", "delivered"): "delivered/fully_paid",
        ("cod", "cancelled"): "cancelled/pending",
        ("cod", "rto"): "rto/pending",
        ("partial_cod", "delivered"): "delivered/fully_paid",
        ("partial_cod", "cancelled"): "cancelled/refunded",
        ("partial_cod", "rto"): "rto/partially_paid",
    }
