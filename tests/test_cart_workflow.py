"""The cart workflow over hours and days, on Temporal's time-skipping test server."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from contracts.carts import (
    CartEvent,
    CartItem,
    CartResult,
    CartSnapshot,
    CartState,
    CartStatus,
    StartCartInput,
)
from contracts.names import EVENT_SIGNAL
from tests.factories import eventually
from worker import build_worker
from workflows.cart import CartWorkflow

HOUR = timedelta(hours=1)


@pytest.fixture
async def cart_worker(
    time_skipping: WorkflowEnvironment,
    task_queue: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[str]:
    async with build_worker(time_skipping.client, task_queue, sessionmaker):
        yield task_queue


class Cart:
    """Drives one cart workflow the way the dispatcher does: signal-with-start."""

    def __init__(self, env: WorkflowEnvironment, task_queue: str) -> None:
        self.env = env
        self.task_queue = task_queue
        self.cart_id = f"cart_{uuid.uuid4().hex[:10]}"
        self.customer_id = "c_1"
        self.handle: WorkflowHandle[CartWorkflow, CartResult] | None = None
        self.sent: set[str] = set()

    async def now(self) -> datetime:
        return await self.env.get_current_time()

    async def send(
        self,
        *,
        items: int = 1,
        at: datetime | None = None,
        event_id: str | None = None,
        type: str = "cart.updated",
        order_id: str | None = None,
    ) -> None:
        occurred = at or await self.now()
        snapshot = None
        if type != "order.placed":
            snapshot = CartSnapshot(
                currency="PKR",
                items=[
                    CartItem(
                        sku=f"SKU{i}", name="Lawn suit", quantity=1, unit_price=Decimal("4500")
                    )
                    for i in range(items)
                ],
                total=Decimal(4500 * items),
                as_of=occurred,
            )
        event_id = event_id or uuid.uuid4().hex
        self.sent.add(event_id)
        event = CartEvent(
            event_id=event_id,
            type=type,
            occurred_at=occurred,
            customer_id=self.customer_id,
            snapshot=snapshot,
            order_id=order_id,
            order_total=Decimal(4500) if order_id else None,
        )
        self.handle = await self.env.client.start_workflow(
            CartWorkflow.run,
            StartCartInput(cart_id=self.cart_id, customer_id=self.customer_id),
            id=f"cart/{self.cart_id}",
            task_queue=self.task_queue,
            start_signal=EVENT_SIGNAL,
            start_signal_args=[event],
        )

    async def state(self) -> CartState:
        """The state once every distinct event sent so far has been taken in.

        The test server answers queries without waiting for signals already in history.
        """
        handle = self.handle
        assert handle is not None

        async def caught_up() -> CartState | None:
            state = await handle.query(CartWorkflow.state)
            return state if state.events_applied >= len(self.sent) else None

        return await eventually(caught_up, within=5, what="workflow to take in its events")

    async def journey_status(self) -> str | None:
        assert self.handle is not None
        description = await self.handle.describe()
        for pair in description.typed_search_attributes:
            if pair.key.name == "JourneyStatus":
                return str(pair.value)
        return None


@pytest.fixture
async def cart(time_skipping: WorkflowEnvironment, cart_worker: str) -> AsyncIterator[Cart]:
    cart = Cart(time_skipping, cart_worker)
    yield cart
    # The shared test server cannot skip time past a timer that no worker will handle.
    if cart.handle is not None:
        with contextlib.suppress(RPCError):
            await time_skipping.client.get_workflow_handle(cart.handle.id).terminate()


async def test_cart_idle_for_an_hour_is_abandoned(cart: Cart):
    await cart.send()
    started = await cart.now()
    assert (await cart.state()).status == CartStatus.active

    await cart.env.sleep(HOUR - timedelta(minutes=1))
    assert (await cart.state()).status == CartStatus.active

    await cart.env.sleep(timedelta(minutes=2))
    state = await cart.state()
    assert state.status == CartStatus.abandoned
    assert state.abandoned_at is not None
    assert abs(state.abandoned_at - (started + HOUR)) < timedelta(seconds=5)
    assert await cart.journey_status() == "abandoned"


async def test_activity_restarts_the_idle_clock(cart: Cart):
    await cart.send()
    await cart.env.sleep(timedelta(minutes=50))
    await cart.send(items=2)

    await cart.env.sleep(timedelta(minutes=20))  # 70 min after the first, 20 after the last
    state = await cart.state()
    assert state.status == CartStatus.active
    assert state.snapshot is not None
    assert len(state.snapshot.items) == 2

    await cart.env.sleep(timedelta(minutes=41))
    assert (await cart.state()).status == CartStatus.abandoned


async def test_activity_on_an_abandoned_cart_makes_it_active_again(cart: Cart):
    await cart.send()
    await cart.env.sleep(2 * HOUR)
    assert (await cart.state()).status == CartStatus.abandoned

    await cart.send(items=3)

    state = await cart.state()
    assert state.status == CartStatus.active
    assert state.abandoned_at is None
    assert await cart.journey_status() == "active"


async def test_an_empty_cart_is_never_abandoned_and_finally_expires(cart: Cart):
    await cart.send(items=0)
    await cart.env.sleep(3 * HOUR)
    assert (await cart.state()).status == CartStatus.empty

    assert cart.handle is not None
    result = await cart.handle.result()  # the test server skips the 30 days

    assert result.status == CartStatus.expired


async def test_an_order_converts_the_cart_and_ends_the_workflow(cart: Cart):
    await cart.send()
    await cart.env.sleep(2 * HOUR)

    await cart.send(type="order.placed", order_id="ord_1")

    assert cart.handle is not None
    result = await cart.handle.result()
    assert result == CartResult(status=CartStatus.converted, order_id="ord_1")
    assert await cart.journey_status() == "converted"


async def test_an_older_snapshot_arriving_late_does_not_replace_a_newer_one(cart: Cart):
    now = await cart.now()
    await cart.send(items=2, at=now)
    await cart.send(items=5, at=now - timedelta(minutes=10))

    state = await cart.state()
    assert state.snapshot is not None
    assert len(state.snapshot.items) == 2
    assert state.events_applied == 2


async def test_a_repeated_event_id_is_applied_once(cart: Cart):
    now = await cart.now()
    await cart.send(event_id="evt_same", items=1, at=now)
    await cart.send(event_id="evt_same", items=4, at=now + timedelta(seconds=1))
    await cart.send(event_id="evt_next", items=2, at=now + timedelta(seconds=2))

    state = await cart.state()
    assert state.events_applied == 2
    assert state.snapshot is not None
    assert len(state.snapshot.items) == 2


async def test_a_backend_clock_ahead_cannot_delay_abandonment(cart: Cart):
    await cart.send(at=await cart.now() + timedelta(hours=5))

    await cart.env.sleep(HOUR + timedelta(minutes=1))

    assert (await cart.state()).status == CartStatus.abandoned
