"""An order's PaymentType and PaymentStatus search attributes follow its payment, on the
time-skipping server: what ops' query "partial-COD orders awaiting payment" relies on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from contracts import search_attributes as sa
from tests.order_shop import OrderShop, ShopEndpoint, order_settings
from tests.providers.fake_payments import FakeRazorpay, FakeStripe
from worker import build_worker


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


async def _payment(shop: OrderShop, order_id: str) -> tuple[str | None, str | None]:
    attributes = (await shop.handle(order_id).describe()).typed_search_attributes
    return attributes.get(sa.PAYMENT_TYPE), attributes.get(sa.PAYMENT_STATUS)


async def test_payment_type_and_status_follow_a_partial_cod_order(
    shop: OrderShop, fake_razorpay: FakeRazorpay
):
    order_id = await shop.place("partial_cod", currency="INR", total="1000.00")
    await shop.settle()
    assert await _payment(shop, order_id) == ("partial_cod", "pending")

    link = await shop.link(order_id)
    fake_razorpay.pay(link.link_id or "")
    await shop.provider_paid(order_id, payment_id="pay_attrs1", provider="razorpay")
    await shop.settle()
    assert await _payment(shop, order_id) == ("partial_cod", "partially_paid")

    await shop.transition(order_id, "cancelled", reason="customer asked")
    await shop.settle()
    assert await _payment(shop, order_id) == ("partial_cod", "refunded")


async def test_a_cod_order_reads_cod_and_pending_until_delivered(shop: OrderShop):
    order_id = await shop.place("cod")
    await shop.settle()
    assert await _payment(shop, order_id) == ("cod", "pending")
    for to in ("packed", "shipped", "delivered"):
        await shop.transition(order_id, to)
    await shop.settle()
    assert await _payment(shop, order_id) == ("cod", "fully_paid")
