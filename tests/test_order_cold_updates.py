"""An ops transition (a Temporal update) that reaches an order while no worker is running:
the next worker starts cold, takes it together with what else arrived meanwhile, and the
history it writes replays on the same code. A worker restart mid-update is the moment a
replay difference would surface, so the committed histories alone do not cover it."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from tests.order_shop import OrderShop, ShopEndpoint, order_settings
from tests.providers.fake_payments import FakeRazorpay, FakeStripe
from worker import build_worker
from workflows.order import OrderWorkflow


@pytest.mark.parametrize("with_event", [False, True], ids=["update-alone", "update-and-event"])
async def test_an_update_taken_by_a_cold_worker_replays(
    dev_server: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_razorpay: FakeRazorpay,
    fake_stripe: FakeStripe,
    shop_endpoint: ShopEndpoint,
    with_event: bool,
) -> None:
    settings = order_settings(database_url, task_queue, fake_razorpay, fake_stripe, shop_endpoint)
    shop = OrderShop(dev_server, settings, sessionmaker)
    async with build_worker(dev_server.client, task_queue, sessionmaker, settings):
        order_id = await shop.place("prepaid", total="4500.00")
        await shop.settle()
        await shop.event(
            "payment.captured", order_id, amount="4500.00", currency="PKR", payment_id="pay_1"
        )
        await shop.settle()
        assert (await shop.state(order_id)).status == "confirmed"  # waiting on its SLA timer

    handle = shop.handle(order_id)
    try:
        # No worker: the event waits in history, the update with the server; the cold
        # worker's first task takes both. The event is ahead of the order (out for delivery
        # before packed): the workflow holds it and applies it once the order is shipped.
        if with_event:
            await shop.event("order.out_for_delivery", order_id)
        update = asyncio.create_task(shop.transition(order_id, "packed"))
        await asyncio.sleep(0.5)
        async with build_worker(dev_server.client, task_queue, sessionmaker, settings):
            assert (await asyncio.wait_for(update, 30)).status == "packed"
            await shop.transition(order_id, "shipped")
            if not with_event:
                await shop.transition(order_id, "out_for_delivery")
            await shop.settle()
            state = await shop.state(order_id)
            assert state.status == "out_for_delivery"
            assert [h.status for h in state.history][-3:] == [
                "packed",
                "shipped",
                "out_for_delivery",
            ]

        history = await handle.fetch_history()
        replayed = await Replayer(
            workflows=[OrderWorkflow], data_converter=pydantic_data_converter
        ).replay_workflow(history, raise_on_replay_failure=False)
        assert replayed.replay_failure is None
    finally:
        await handle.terminate("test over")
