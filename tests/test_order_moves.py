"""Ops moving an order by signal (services/orders/moves.py), on the dev server: a move is
applied once however often it is delivered, judged after every event that reached the
order before it, refused with the status that made it impossible, and an ended order says
it has ended."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from contracts.names import TRANSITION_OUTCOME_QUERY, TRANSITION_SIGNAL
from contracts.orders import TransitionOutcome, TransitionRequest, TransitionSignal
from services.orders import moves
from tests.factories import eventually
from tests.order_shop import OrderShop
from worker import Workers, build_worker


def _worker(shop: OrderShop) -> Workers:
    return build_worker(
        shop.env.client, shop.settings.temporal_task_queue, shop.sessionmaker, shop.settings
    )


@pytest.fixture
async def confirmed(dev_order_shop: OrderShop) -> AsyncIterator[str]:
    """A COD order, confirmed at once and waiting to be shipped; no worker runs after."""
    async with _worker(dev_order_shop):
        order_id = await dev_order_shop.place("cod")
        await eventually(
            lambda: _status_is(dev_order_shop, order_id, "confirmed"), what="the confirmed order"
        )
    yield order_id
    await dev_order_shop.terminate_all()


async def _status_is(shop: OrderShop, order_id: str, status: str) -> bool:
    return (await shop.state(order_id)).status == status


async def test_a_move_delivered_three_times_is_applied_once(
    dev_order_shop: OrderShop, confirmed: str
):
    shop, order_id = dev_order_shop, confirmed
    handle = shop.handle(order_id)
    shipped = TransitionRequest(to="shipped", by="tests", tracking_url="https://track.example/1")
    again = TransitionSignal(request_id="ops-1", request=shipped)
    # The same request id naming another move is still the first request: ignored.
    other = TransitionSignal(request_id="ops-1", request=TransitionRequest(to="cancelled"))
    async with _worker(shop):
        for signal in (again, again, other):
            await handle.signal(TRANSITION_SIGNAL, signal)

        async def judged() -> TransitionOutcome | None:
            outcome = await handle.query(
                TRANSITION_OUTCOME_QUERY, "ops-1", result_type=TransitionOutcome
            )
            return outcome if outcome.done else None

        outcome = await eventually(judged, what="the move judged")
        await shop.settle()
        state = await shop.state(order_id)
        templates = await shop.templates(order_id)
        unknown = await handle.query(
            TRANSITION_OUTCOME_QUERY, "never-sent", result_type=TransitionOutcome
        )

    assert (outcome.known, outcome.error, outcome.state.status) == (True, None, "shipped")
    assert state.status == "shipped"
    assert [h.status for h in state.history] == ["placed", "confirmed", "shipped"]
    assert templates.count("order_shipped") == 1
    assert (unknown.known, unknown.done) == (False, False)


async def test_a_refused_move_says_why_and_where_the_order_stands_and_changes_nothing(
    dev_order_shop: OrderShop, confirmed: str
):
    shop, order_id = dev_order_shop, confirmed
    async with _worker(shop):
        with pytest.raises(moves.Refused) as refused:
            await shop.move(order_id, "delivered")
        state = await shop.state(order_id)

    assert "cannot go from confirmed to delivered" in refused.value.message
    assert refused.value.status == "confirmed"
    assert state.status == "confirmed"
    assert [h.status for h in state.history] == ["placed", "confirmed"]


async def test_a_move_sent_after_an_event_is_judged_on_the_state_the_event_left(
    dev_order_shop: OrderShop, confirmed: str
):
    """No worker runs while the shop's order.shipped and ops' move to out_for_delivery
    arrive: the move (refused from confirmed) is judged once the event is applied, and
    ops' move back to packed, sent after both, is refused on the shipped order."""
    shop, order_id = dev_order_shop, confirmed
    await shop.event("order.shipped", order_id)
    onward = asyncio.create_task(shop.move(order_id, "out_for_delivery"))
    await asyncio.sleep(0.5)
    back = asyncio.create_task(shop.move(order_id, "packed"))
    await asyncio.sleep(0.5)
    # Nothing answers without a worker.
    assert not onward.done()
    assert not back.done()
    async with _worker(shop):
        state = await asyncio.wait_for(onward, 30)
        with pytest.raises(moves.Refused) as refused:
            await asyncio.wait_for(back, 30)

    assert state.status == "out_for_delivery"
    assert [h.status for h in state.history] == [
        "placed",
        "confirmed",
        "shipped",
        "out_for_delivery",
    ]
    assert refused.value.status == "out_for_delivery"


async def test_a_move_no_worker_judges_in_time_is_unanswered_and_applied_once_one_runs(
    dev_order_shop: OrderShop, confirmed: str
):
    shop, order_id = dev_order_shop, confirmed
    with pytest.raises(moves.Unanswered):
        await shop.move(order_id, "packed", within=timedelta(seconds=1))
    async with _worker(shop):
        await eventually(lambda: _status_is(shop, order_id, "packed"), what="the late move")
        state = await shop.state(order_id)
    assert [h.status for h in state.history] == ["placed", "confirmed", "packed"]


async def test_an_ended_order_takes_no_move(dev_order_shop: OrderShop, confirmed: str):
    shop, order_id = dev_order_shop, confirmed
    await shop.handle(order_id).terminate("ops closed it")
    with pytest.raises(moves.Closed):
        await shop.move(order_id, "packed")
