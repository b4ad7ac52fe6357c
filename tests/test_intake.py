"""Event intake end to end: HTTP -> PostgreSQL -> dispatcher -> Temporal dev server -> workflow."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus

from contracts.carts import CartState
from contracts.names import STATE_QUERY
from db.models import Event, EventRoute
from tests.conftest import Api
from tests.factories import ago, cart_updated, eventually, order_placed, uid


async def _signals(temporal: Client, workflow_id: str) -> int:
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    return sum(
        1
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    )


async def _state(temporal: Client, workflow_id: str) -> CartState:
    return await temporal.get_workflow_handle(workflow_id).query(STATE_QUERY, result_type=CartState)


async def test_event_is_accepted_and_starts_the_cart_workflow(api: Api, temporal: Client, worker):
    event = cart_updated()
    cart_id = event["data"]["cart_id"]

    response = await api.post_event(event)

    assert response.status_code == 202
    assert response.json() == {"id": event["id"], "status": "accepted"}
    state = await eventually(lambda: _state(temporal, f"cart/{cart_id}"), what="cart workflow")
    assert state.status == "active"
    assert state.customer_id == event["customer"]["id"]
    assert state.snapshot is not None
    assert str(state.snapshot.total) == "4500.00"
    handle = temporal.get_workflow_handle(f"cart/{cart_id}")

    async def published() -> Any:
        # The status is published after the workflow's first activity: poll for it.
        description = await handle.describe()
        attrs = {p.key.name: p.value for p in description.typed_search_attributes}
        return (description, attrs) if "JourneyStatus" in attrs else None

    description, attrs = await eventually(published, what="search attributes")
    assert attrs["CartId"] == cart_id
    assert attrs["CustomerId"] == event["customer"]["id"]
    assert attrs["JourneyStatus"] == "active"
    assert (
        await description.static_summary()
        == f"Cart {cart_id} of customer {event['customer']['id']}"
    )


async def test_same_event_twice_signals_the_workflow_once(
    api: Api, temporal: Client, worker, sessionmaker: async_sessionmaker[AsyncSession]
):
    event = cart_updated()
    workflow_id = f"cart/{event['data']['cart_id']}"

    first = await api.post_event(event)
    again = await api.post_event(event)
    # A client retrying concurrently must not slip a second copy through either.
    racing = await asyncio.gather(*(api.post_event(event) for _ in range(5)))

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json() == {"id": event["id"], "status": "duplicate"}
    assert all(r.status_code == 200 and r.json()["status"] == "duplicate" for r in racing)
    await eventually(lambda: _state(temporal, workflow_id), what="cart workflow")
    await asyncio.sleep(0.5)  # room for a wrongly duplicated delivery to arrive
    assert await _signals(temporal, workflow_id) == 1
    async with sessionmaker() as session:
        routes = await session.scalar(
            select(func.count()).select_from(EventRoute).where(EventRoute.event_id == event["id"])
        )
    assert routes == 1


async def test_a_redelivered_event_is_ignored_by_the_workflow(
    api: Api, temporal: Client, worker, sessionmaker: async_sessionmaker[AsyncSession]
):
    """The dispatcher may deliver twice (crash before bookkeeping); the workflow dedupes."""
    event = cart_updated()
    workflow_id = f"cart/{event['data']['cart_id']}"
    await api.post_event(event)
    await eventually(lambda: _state(temporal, workflow_id), what="cart workflow")

    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(EventRoute)
            .where(EventRoute.event_id == event["id"])
            .values(status="pending", delivered_at=None)
        )

    await eventually(lambda: _signals_equal(temporal, workflow_id, 2), what="re-delivery")
    state = await _state(temporal, workflow_id)
    assert state.events_applied == 1


async def _signals_equal(temporal: Client, workflow_id: str, count: int) -> bool:
    return await _signals(temporal, workflow_id) == count


async def test_order_for_the_cart_ends_its_workflow(api: Api, temporal: Client, worker):
    cart = cart_updated()
    cart_id, customer_id = cart["data"]["cart_id"], cart["customer"]["id"]
    order = order_placed(cart_id=cart_id, customer_id=customer_id)
    handle = temporal.get_workflow_handle(f"cart/{cart_id}")

    assert (await api.post_event(cart)).status_code == 202
    await eventually(lambda: _state(temporal, handle.id), what="cart workflow")
    assert (await api.post_event(order)).status_code == 202

    result = await asyncio.wait_for(handle.result(), timeout=10)
    assert result["status"] == "converted"
    assert result["order_id"] == order["data"]["order_id"]
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.COMPLETED
    attrs = {p.key.name: p.value for p in description.typed_search_attributes}
    assert attrs["JourneyStatus"] == "converted"
    assert attrs["OrderId"] == order["data"]["order_id"]


async def test_late_cart_event_does_not_revive_an_ordered_cart(api: Api, temporal: Client, worker):
    """An update that happened before the order but arrives after it must not restart the
    cart: that would send abandoned-cart reminders to someone who has already bought."""
    cart_id, customer_id = uid("cart"), uid("c")
    early = cart_updated(cart_id, customer_id=customer_id, occurred_at=ago(minutes=10))
    order = order_placed(cart_id=cart_id, customer_id=customer_id, occurred_at=ago(minutes=5))
    late = cart_updated(cart_id, customer_id=customer_id, occurred_at=ago(minutes=9))
    handle = temporal.get_workflow_handle(f"cart/{cart_id}")

    await api.post_event(early)
    await eventually(lambda: _state(temporal, handle.id), what="cart workflow")
    await api.post_event(order)
    await asyncio.wait_for(handle.result(), timeout=10)
    first_run = (await handle.describe()).run_id
    await api.post_event(late)

    async def told_to_the_ended_cart() -> dict[str, Any] | None:
        [route] = (await api.get(f"/v1/events/{late['id']}")).json()["routes"]
        return route if route["status"] != "pending" else None

    route = await eventually(told_to_the_ended_cart, what="the late event's delivery")
    assert route["status"] == "delivered_to_closed"
    assert route["detail"] == "cart converted: cart.updated changes nothing"
    latest = await handle.describe()  # no second run: the cart stays an order
    assert (latest.run_id, latest.status) == (first_run, WorkflowExecutionStatus.COMPLETED)
    state = await _state(temporal, handle.id)
    assert state.status == "converted"
    assert state.order_id == order["data"]["order_id"]


async def test_order_without_a_running_cart_is_recorded_and_skipped(
    api: Api, temporal: Client, worker, sessionmaker: async_sessionmaker[AsyncSession]
):
    order = order_placed(cart_id=uid("cart"), customer_id=uid("c"))

    assert (await api.post_event(order)).status_code == 202

    async def outcomes() -> dict[str, str] | None:
        body = (await api.get(f"/v1/events/{order['id']}")).json()
        found = {r["workflow_id"]: r["status"] for r in body["routes"]}
        return found if "pending" not in found.values() else None

    routes = await eventually(outcomes, what="route outcomes")
    # No cart workflow to tell: skipped. The order's own workflow starts with it.
    assert routes[f"cart/{order['data']['cart_id']}"] == "skipped"
    assert routes[f"order/{order['data']['order_id']}"] == "delivered"
    async with sessionmaker() as session:
        stored = await session.get(Event, order["id"])
    assert stored is not None
    assert stored.order_id == order["data"]["order_id"]


async def test_batch_reports_each_event_and_stores_only_valid_ones(
    api: Api, temporal: Client, worker, sessionmaker: async_sessionmaker[AsyncSession]
):
    good = cart_updated()
    seen = cart_updated()
    await api.post_event(seen)
    bad = cart_updated()
    bad["data"]["currency"] = "XYZ"
    repeated_in_batch = cart_updated()

    response = await api.post_batch([good, seen, bad, repeated_in_batch, repeated_in_batch])

    assert response.status_code == 207
    body = response.json()
    assert [r["status"] for r in body["results"]] == [
        "accepted",
        "duplicate",
        "rejected",
        "accepted",
        "duplicate",
    ]
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3, 4]
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (2, 2, 1)
    rejected = body["results"][2]
    assert rejected["id"] == bad["id"]
    assert rejected["error"]["error"] == "validation_error"
    assert rejected["error"]["fields"][0]["loc"] == ["events", 2, "data", "currency"]
    async with sessionmaker() as session:
        assert await session.get(Event, bad["id"]) is None
        assert await session.get(Event, good["id"]) is not None
    await eventually(
        lambda: _state(temporal, f"cart/{repeated_in_batch['data']['cart_id']}"), what="workflow"
    )
