"""The Temporal server stopped under a steady event load, then started again on its own
persisted data: every event the API accepted meanwhile takes effect, in order per cart.

The server is a real ``temporal server start-dev --db-filename``; the worker is its own
process; the API (dispatcher included) runs in-process. ``SUTRA_SOAK=1`` makes the outage a
minute long and the load bigger (``make soak``)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from contracts.carts import CartState
from contracts.names import STATE_QUERY
from tests.conftest import Api, make_settings, start_api
from tests.factories import cart_updated, eventually, item, uid
from tests.processes import DevServer, WorkerProcess, processes, sutra_env

SOAK = os.environ.get("SUTRA_SOAK") == "1"
CARTS = 40 if SOAK else 20
EVENTS_PER_CART = 40 if SOAK else 12
OUTAGE = 60.0 if SOAK else 10.0
# Posting spreads the load over the outage and a little either side of it.
LOAD_SECONDS = OUTAGE + (30.0 if SOAK else 8.0)
STOP_AFTER = 3.0


def _event(cart_id: str, customer_id: str, n: int, start: datetime) -> dict[str, Any]:
    """The n-th update of a cart: its quantity is n, so the state shows which came last."""
    return cart_updated(
        cart_id,
        customer_id=customer_id,
        items=[item("SKU1", quantity=n)],
        occurred_at=(start + timedelta(milliseconds=n)).isoformat().replace("+00:00", "Z"),
    )


async def _signalled(client: Client, workflow_id: str) -> list[str]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    ids = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            payload = event.workflow_execution_signaled_event_attributes.input.payloads[0]
            ids.append(pydantic_data_converter.payload_converter.from_payload(payload)["event_id"])
    return ids


@pytest.mark.timeout(600 if SOAK else 150)
async def test_events_accepted_during_a_temporal_outage_all_take_effect_in_order(
    database_url: str, task_queue: str
):
    folder = Path(tempfile.mkdtemp(prefix="sutra-temporal-outage-"))
    api: Api | None = None
    lifespan: Any = None
    try:
        with processes() as started:
            server = started.add(DevServer(folder))
            server.start()
            await server.ready()
            worker = started.add(
                WorkerProcess(folder, sutra_env(database_url, server.address, task_queue))
            )
            worker.start()
            api, lifespan = await start_api(make_settings(database_url, server.address, task_queue))

            carts = [(uid("cart"), uid("c")) for _ in range(CARTS)]
            start = datetime.now(UTC)
            sent: dict[str, list[str]] = {cart_id: [] for cart_id, _ in carts}
            refused: list[str] = []
            outage: dict[str, float] = {}
            during: list[str] = []  # accepted while the server was down

            async def load() -> None:
                assert api is not None
                interval = LOAD_SECONDS / EVENTS_PER_CART
                for n in range(1, EVENTS_PER_CART + 1):
                    began = time.monotonic()
                    for cart_id, customer_id in carts:
                        event = _event(cart_id, customer_id, n, start)
                        response = await api.post_event(event)
                        if response.status_code == 202:
                            sent[cart_id].append(event["id"])
                            if "stopped" in outage and "started" not in outage:
                                during.append(event["id"])
                        else:
                            refused.append(f"{response.status_code} {response.text}")
                    await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))

            async def outage_window() -> None:
                assert api is not None
                await asyncio.sleep(STOP_AFTER)
                outage["stopped"] = time.monotonic()
                await asyncio.to_thread(server.stop)  # SIGTERM: its data stays in the file
                await asyncio.sleep(1)
                ready = await api.http.get("/readyz")
                outage["readyz"] = ready.status_code
                await asyncio.sleep(OUTAGE - 1)
                await asyncio.to_thread(server.start)
                outage["started"] = time.monotonic()

            await asyncio.gather(load(), outage_window())
            assert refused == [], refused[:5]
            assert outage["readyz"] == 503  # Temporal down, intake up
            await server.ready()
            client = await Client.connect(server.address, data_converter=pydantic_data_converter)

            async def applied(cart_id: str) -> CartState | None:
                state = await client.get_workflow_handle(f"cart/{cart_id}").query(
                    STATE_QUERY, result_type=CartState
                )
                return state if state.events_applied == len(sent[cart_id]) else None

            for cart_id, _ in carts:
                state = await eventually(
                    lambda c=cart_id: applied(c),  # type: ignore[misc]
                    within=120 if SOAK else 60,
                    interval=0.5,
                    what=f"every accepted event to reach cart/{cart_id}",
                )
                assert len(sent[cart_id]) == EVENTS_PER_CART
                assert state.snapshot is not None
                assert [i.quantity for i in state.snapshot.items] == [EVENTS_PER_CART]
                assert await _signalled(client, f"cart/{cart_id}") == sent[cart_id]
            drained = time.monotonic() - outage["started"]
            assert (await api.http.get("/readyz")).status_code == 200
            total = sum(len(ids) for ids in sent.values())
            print(
                f"\n[temporal-outage] outage {OUTAGE:.0f}s, carts {CARTS}, events accepted {total}"
                f" ({len(during)} while down), applied {total}, out of order 0,"
                f" all applied {drained:.1f}s after restart"
            )
            assert len(during) > CARTS  # the outage really was under load
    finally:
        if api is not None:
            await api.http.aclose()
            await lifespan.__aexit__(None, None, None)
        shutil.rmtree(folder, ignore_errors=True)
