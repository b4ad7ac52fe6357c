"""Accepted means never lost: events taken while Temporal is down reach their workflows later,
in order; one workflow's delivery problem holds back only that workflow."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from contracts import search_attributes
from contracts.carts import CartState
from contracts.events import EVENT_ADAPTER
from contracts.names import STATE_QUERY
from db.models import EventRoute, RouteHold
from embedded.binaries import temporal_cli
from services.intake.service import ingest
from tests.conftest import Api, free_port, make_settings, start_api
from tests.factories import ago, cart_updated, eventually, item, uid
from worker import build_worker


async def _route(api: Api, event_id: str) -> dict[str, Any]:
    body = (await api.get(f"/v1/events/{event_id}")).json()
    route: dict[str, Any] = body["routes"][0]
    return route


async def _signal_order(client: Client, workflow_id: str) -> list[str]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    ids = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            payload = event.workflow_execution_signaled_event_attributes.input.payloads[0]
            ids.append(pydantic_data_converter.payload_converter.from_payload(payload)["event_id"])
    return ids


async def test_events_accepted_while_temporal_is_down_are_delivered_in_order_after_recovery(
    database_url: str, task_queue: str, sessionmaker: async_sessionmaker[AsyncSession]
):
    port = free_port()
    settings = make_settings(database_url, f"127.0.0.1:{port}", task_queue)
    api, lifespan = await start_api(settings)
    env: WorkflowEnvironment | None = None
    try:
        cart_id, customer_id = uid("cart"), uid("c")
        first = cart_updated(cart_id, customer_id=customer_id, occurred_at=ago(minutes=10))
        second = cart_updated(
            cart_id,
            customer_id=customer_id,
            occurred_at=ago(minutes=5),
            items=[item("SKU1"), item("SKU2")],
        )
        others = [cart_updated() for _ in range(3)]

        for event in [first, *others, second]:
            response = await api.post_event(event)
            assert response.status_code == 202, response.text

        ready = await api.http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["temporal"].startswith("unavailable")
        assert ready.json()["checks"]["database"] == "ok"

        async def failed_attempt() -> bool:
            route = await _route(api, first["id"])
            return route["status"] == "pending" and route["attempts"] >= 1

        await eventually(failed_attempt, what="a failed delivery attempt to be recorded")
        assert (await _route(api, first["id"]))["last_error"]

        env = await WorkflowEnvironment.start_local(
            port=port,
            dev_server_existing_path=temporal_cli(),
            data_converter=pydantic_data_converter,
            search_attributes=search_attributes.ALL,
            dev_server_log_level="error",
        )
        async with build_worker(env.client, task_queue, sessionmaker):
            client = env.client
            workflow_id = f"cart/{cart_id}"

            async def both_applied() -> CartState | None:
                state = await client.get_workflow_handle(workflow_id).query(
                    STATE_QUERY, result_type=CartState
                )
                return state if state.events_applied == 2 else None

            state = await eventually(both_applied, within=30, what="events to reach the cart")
            assert state.snapshot is not None
            assert [i.sku for i in state.snapshot.items] == ["SKU1", "SKU2"]
            assert await _signal_order(client, workflow_id) == [first["id"], second["id"]]
            for event in others:
                route = await eventually(
                    functools.partial(_delivered, api, event["id"]), what="every event delivered"
                )
                assert route["status"] == "delivered"
            ready = await api.http.get("/readyz")
            assert ready.status_code == 200
    finally:
        await api.http.aclose()
        await lifespan.__aexit__(None, None, None)
        if env is not None:
            await env.shutdown()


async def _delivered(api: Api, event_id: str) -> dict[str, Any] | None:
    route = await _route(api, event_id)
    return route if route["status"] == "delivered" else None


async def test_a_workflow_that_refuses_delivery_holds_back_only_itself(
    api: Api,
    settings: Settings,
    temporal: Client,
    worker,
    sessionmaker: async_sessionmaker[AsyncSession],
):
    """A delivery Temporal rejects for this workflow alone (here: a payload over its blob
    size limit, as a bad deploy might write) is retried with backoff; later events for the
    same workflow wait behind it, and every other workflow's events flow on."""
    cart_id = uid("cart")
    stuck = [cart_updated(cart_id), cart_updated(cart_id)]
    async with sessionmaker() as session, session.begin():
        await ingest(
            session,
            [EVENT_ADAPTER.validate_python(e) for e in stuck],
            settings=settings,
            api_key_id=None,
        )
        first = await session.scalar(
            select(EventRoute).where(EventRoute.event_id == stuck[0]["id"])
        )
        assert first is not None
        first.signal_payload = {**first.signal_payload, "padding": "x" * 3_000_000}
    healthy = cart_updated()

    assert (await api.post_event(healthy)).status_code == 202

    await eventually(lambda: _delivered(api, healthy["id"]), what="a healthy event to flow")

    async def held() -> RouteHold | None:
        async with sessionmaker() as session:
            return await session.get(RouteHold, f"cart/{cart_id}")

    hold = await eventually(held, what="the refused workflow to be held")
    assert hold.last_error is not None
    assert "INVALID_ARGUMENT" in hold.last_error
    assert (await _route(api, stuck[0]["id"]))["status"] == "pending"
    waiting = await _route(api, stuck[1]["id"])
    assert waiting["status"] == "pending"
    assert waiting["attempts"] == 0, "a later event must never overtake the failing one"

    # Repaired (as an operator would after the bad deploy), the held events flow, in order.
    async with sessionmaker() as session, session.begin():
        broken = await session.scalar(
            select(EventRoute).where(EventRoute.event_id == stuck[0]["id"])
        )
        assert broken is not None
        broken.signal_payload = {k: v for k, v in broken.signal_payload.items() if k != "padding"}
    for event in stuck:
        await eventually(
            functools.partial(_delivered, api, event["id"]), what="the repaired events"
        )
    assert await _signal_order(temporal, f"cart/{cart_id}") == [e["id"] for e in stuck]
