"""The ``sutra`` command as an operator runs it: the installed console script, in its own
process, against the API under uvicorn (dispatcher included) and a worker, over HTTP.

Each command's ``--json`` prints the API's answer; without it a table says the same
things; an API error prints the API's detail and exits 4 (refused, 4xx), 5 (failed, 5xx)
or 6 (nothing answered)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from db.engine import create_engine, create_sessionmaker
from services.journeys.rules import DEFAULT_ABANDONED_CART
from tests.conftest import ADMIN_KEY, make_settings
from tests.factories import ago, cart_updated, eventually, order_placed, uid
from tests.processes import ApiProcess, Processes, free_port, sutra_env
from worker import build_worker

SUTRA = Path(sys.executable).parent / "sutra"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Engine:
    url: str
    http: httpx.AsyncClient

    async def sutra(
        self, *args: str, key: str | None = ADMIN_KEY, url: str | None = None
    ) -> Result:
        """The installed command, as a shell would run it (not blocking the worker here)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUTRA_")}
        env.update(SUTRA_API_URL=url or self.url, COLUMNS="200")
        if key is not None:
            env["SUTRA_API_KEY"] = key
        process = await asyncio.create_subprocess_exec(
            str(SUTRA),
            *args,
            env=env,
            cwd=tempfile.gettempdir(),  # no var/admin-key here
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode is not None
        return Result(process.returncode, out.decode(), err.decode())

    async def post_event(self, event: dict[str, Any]) -> None:
        response = await self.http.post("/v1/events", json=event)
        assert response.status_code == 202, response.text

    async def routes(self, event_id: str) -> list[dict[str, Any]] | None:
        """The event's deliveries, once none is pending."""
        routes: list[dict[str, Any]] = (await self.http.get(f"/v1/events/{event_id}")).json()[
            "routes"
        ]
        return routes if all(r["status"] != "pending" for r in routes) else None


@pytest.fixture(scope="module")
async def engine(database_url: str, dev_server: WorkflowEnvironment) -> AsyncIterator[Engine]:
    queue = f"tq-{uid('cli')}"
    address = dev_server.client.service_client.config.target_host
    folder = Path(tempfile.mkdtemp(prefix="sutra-cli-"))
    started = Processes()
    db = create_engine(make_settings(database_url, address, queue))
    try:
        api = started.add(
            ApiProcess(
                folder,
                sutra_env(
                    database_url,
                    address,
                    queue,
                    SUTRA_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
                    SUTRA_RATE_LIMIT_PER_MINUTE="0",
                ),
            )
        )
        api.start()
        worker = build_worker(dev_server.client, queue, create_sessionmaker(db))
        async with worker, httpx.AsyncClient(base_url=api.url, headers=AUTH, timeout=30) as http:
            yield Engine(api.url, http)
    except BaseException:
        sys.stderr.write(started.logs() + "\n")
        raise
    finally:
        started.cleanup()
        await db.dispose()


@dataclass
class Shop:
    customer_id: str
    order_id: str
    order_event: str
    late_event: str  # reached a cart that had become an order: delivered_to_closed
    rule_id: str


@pytest.fixture(scope="module")
async def shop(engine: Engine, dev_server: WorkflowEnvironment) -> Shop:
    customer_id, cart_id = uid("c"), uid("cart")
    await engine.post_event(
        cart_updated(cart_id, customer_id=customer_id, occurred_at=ago(minutes=10))
    )
    order = order_placed(cart_id=cart_id, customer_id=customer_id, occurred_at=ago(minutes=5))
    await engine.post_event(order)
    await eventually(lambda: engine.routes(order["id"]), what="the order's deliveries", within=30)
    # The late event must find the cart's workflow ended, not still finishing.
    cart = dev_server.client.get_workflow_handle(f"cart/{cart_id}")
    await asyncio.wait_for(cart.result(), timeout=30)
    late = cart_updated(cart_id, customer_id=customer_id, occurred_at=ago(minutes=9))
    await engine.post_event(late)
    [route] = await eventually(lambda: engine.routes(late["id"]), what="the late event", within=30)
    assert route["status"] == "delivered_to_closed"
    rule = {**DEFAULT_ABANDONED_CART, "name": "CLI test rule"}
    created = await engine.http.post("/v1/rules", json=rule)
    assert created.status_code == 201, created.text
    return Shop(
        customer_id, order["data"]["order_id"], order["id"], late["id"], created.json()["id"]
    )


async def test_orders_show_and_move(engine: Engine, shop: Shop):
    shown = await engine.sutra("orders", "show", shop.order_id, "--json")
    assert shown.code == 0, shown.err
    assert shown.json() == (await engine.http.get(f"/v1/orders/{shop.order_id}")).json()
    assert shown.json()["customer_id"] == shop.customer_id

    moved = await engine.sutra(
        "orders", "move", shop.order_id, "--to", "cancelled", "--reason", "customer asked", "--json"
    )
    assert moved.code == 0, moved.err
    assert moved.json()["status"] == "cancelled"
    assert "customer asked" in (moved.json()["history"][-1]["note"] or "")

    table = await engine.sutra("orders", "show", shop.order_id)
    assert table.code == 0, table.err
    assert f"Order {shop.order_id}" in table.out
    assert "cod / " in table.out  # payment type and status on one line
    [line] = [line for line in table.out.splitlines() if "customer asked" in line]
    assert "cancelled" in line
    assert "ops:bootstrap admin" in line

    refused = await engine.sutra("orders", "move", shop.order_id, "--to", "shipped")
    assert (refused.code, refused.out) == (4, "")
    assert "409 conflict" in refused.err
    assert "cancelled" in refused.err


async def test_events_show_and_redeliver(engine: Engine, shop: Shop):
    shown = await engine.sutra("events", "show", shop.late_event, "--json")
    assert shown.code == 0, shown.err
    [route] = shown.json()["routes"]
    assert (route["status"], route["origin"]) == ("delivered_to_closed", "event")

    again = await engine.sutra("events", "redeliver", shop.late_event, "--json")
    assert again.code == 0, again.err
    [queued] = again.json()["requeued"]
    assert (queued["workflow_id"], queued["status"], queued["origin"]) == (
        route["workflow_id"],
        "pending",
        "redelivery",
    )
    assert queued["seq"] > route["seq"]
    # The dispatcher hands the copy over like any delivery; the converted cart ignores it.
    routes = await eventually(lambda: engine.routes(shop.late_event), what="the redelivery")
    assert [(r["origin"], r["status"]) for r in routes] == [
        ("event", "delivered_to_closed"),
        ("redelivery", "delivered_to_closed"),
    ]
    table = await engine.sutra("events", "show", shop.late_event)
    assert table.code == 0, table.err
    assert "cart.updated" in table.out
    assert "signal_with_start (again)" in table.out
    assert table.out.count("cart converted: cart.updated changes nothing") == 2

    # An event whose deliveries all arrived has nothing to hand over again: a new cart's
    # first update, taken by the cart workflow it started.
    fresh = cart_updated(uid("cart"), customer_id=uid("c"), occurred_at=ago(minutes=1))
    await engine.post_event(fresh)
    arrived = await eventually(lambda: engine.routes(fresh["id"]), what="the fresh event")
    assert {r["status"] for r in arrived} == {"delivered"}, arrived
    refused = await engine.sutra("events", "redeliver", fresh["id"])
    assert refused.code == 4
    assert "409 conflict" in refused.err
    assert "nothing to redeliver" in refused.err
    audit = (await engine.http.get("/v1/audit", params={"entity": "event"})).json()
    assert [(e["entity_id"], e["action"]) for e in audit["entries"]] == [
        (shop.late_event, "redeliver")
    ]

    missing = await engine.sutra("events", "show", "evt_no_such_event")
    assert missing.code == 4
    assert "404 not_found: no event with id 'evt_no_such_event'" in missing.err


async def test_rules_list_pause_activate(engine: Engine, shop: Shop):
    listed = await engine.sutra("rules", "list", "--json")
    assert listed.code == 0, listed.err
    assert shop.rule_id in [r["id"] for r in listed.json()]

    activated = await engine.sutra("rules", "activate", shop.rule_id, "--json")
    assert (activated.code, activated.json()["status"]) == (0, "active")
    paused = await engine.sutra("rules", "pause", shop.rule_id)
    assert paused.code == 0, paused.err
    assert shop.rule_id in paused.out
    assert "paused" in paused.out
    assert (await engine.http.get(f"/v1/rules/{shop.rule_id}")).json()["status"] == "paused"

    table = await engine.sutra("rules", "list")
    assert table.code == 0, table.err
    [line] = [line for line in table.out.splitlines() if shop.rule_id in line]
    assert "CLI test rule" in line
    assert "paused" in line
    assert "cart.abandoned" in line


async def test_analytics_rule(engine: Engine, shop: Shop):
    figures = await engine.sutra(
        "analytics", "rule", shop.rule_id, "--from", "2026-01-01", "--to", "2026-12-31", "--json"
    )
    assert figures.code == 0, figures.err
    assert figures.json()["rule_id"] == shop.rule_id
    period = {"from": "2026-01-01", "to": "2026-12-31"}
    api = await engine.http.get(f"/v1/analytics/rules/{shop.rule_id}", params=period)
    assert figures.json() == api.json()
    assert figures.json()["period"]["from"] == "2026-01-01"

    table = await engine.sutra("analytics", "rule", shop.rule_id)
    assert (table.code, f"Rule {shop.rule_id}" in table.out) == (0, True)

    bad = await engine.sutra("analytics", "rule", shop.rule_id, "--from", "yesterday")
    assert bad.code == 2
    assert "'yesterday' is not a date" in bad.err


async def test_messages(engine: Engine, shop: Shop):
    async def ledger() -> dict[str, Any] | None:
        page = await engine.http.get("/v1/messages", params={"customer_id": shop.customer_id})
        body: dict[str, Any] = page.json()
        return body if body["messages"] else None

    # The COD order asks its customer to confirm it.
    expected = await eventually(ledger, what="a message to the customer", within=30)
    listed = await engine.sutra("messages", "--customer", shop.customer_id, "--json")
    assert listed.code == 0, listed.err
    assert [m["id"] for m in listed.json()["messages"]] == [m["id"] for m in expected["messages"]]

    first = expected["messages"][0]
    filtered = await engine.sutra(
        "messages", "--customer", shop.customer_id, "--status", first["status"], "--json"
    )
    assert first["id"] in [m["id"] for m in filtered.json()["messages"]]
    assert {m["status"] for m in filtered.json()["messages"]} == {first["status"]}
    none = await engine.sutra("messages", "--customer", shop.customer_id, "--status", "clicked")
    assert (none.code, none.out.strip()) == (0, "Messages: none")

    table = await engine.sutra("messages", "--customer", shop.customer_id)
    assert table.code == 0, table.err
    assert first["template"] in table.out
    assert shop.customer_id in table.out


async def test_stranded(engine: Engine):
    found = await engine.sutra("stranded", "--json")
    assert found.code == 0, found.err
    assert (found.json()["count"], found.json()["workflows"]) == (0, [])
    table = await engine.sutra("stranded")
    assert table.out.startswith("0 stranded workflow(s) on task queue tq-cli")


async def test_errors_exit_by_kind(engine: Engine, database_url: str):
    no_key = await engine.sutra("rules", "list", key=None)
    assert no_key.code == 4
    assert "401 unauthorized" in no_key.err
    assert "SUTRA_API_KEY" in no_key.err
    wrong = await engine.sutra("rules", "list", key="sutra_not_a_key")
    assert wrong.code == 4

    nobody = await engine.sutra("stranded", url=f"http://127.0.0.1:{free_port()}")
    assert nobody.code == 6
    assert "cannot reach Sutra" in nobody.err
    assert "Connection refused" in nobody.err

    # An API whose Temporal is down answers 503 where it needs Temporal: exit 5.
    folder = Path(tempfile.mkdtemp(prefix="sutra-cli-down-"))
    started = Processes()
    try:
        api = started.add(
            ApiProcess(
                folder,
                sutra_env(
                    database_url,
                    f"127.0.0.1:{free_port()}",
                    f"tq-{uid('down')}",
                    SUTRA_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
                    SUTRA_DISPATCHER_ENABLED="false",
                ),
            )
        )
        api.start()
        failed = await engine.sutra("stranded", url=api.url)
        order = await engine.sutra("orders", "show", "ord_1", url=api.url)
    finally:
        started.cleanup()
    assert failed.code == 5
    assert "503 service_unavailable: Temporal did not answer" in failed.err
    assert (order.code, order.err) == (failed.code, failed.err)


async def test_journeys_of_a_customer(engine: Engine, shop: Shop):
    paths = (await engine.http.get("/openapi.json")).json()["paths"]
    if "/v1/customers/{customer_id}/journeys" not in paths:
        pytest.skip("GET /v1/customers/{id}/journeys is not on this branch yet")
    found = await engine.sutra("journeys", "--customer", shop.customer_id, "--json")
    assert found.code == 0, found.err
    body = found.json()
    journeys = body["journeys"] if isinstance(body, dict) else body
    workflows = {j["workflow_id"]: j for j in journeys}
    assert f"order/{shop.order_id}" in workflows
    assert workflows[f"order/{shop.order_id}"]["workflow_type"] == "OrderWorkflow"
    assert workflows[f"order/{shop.order_id}"]["started_at"]
    table = await engine.sutra("journeys", "--customer", shop.customer_id)
    assert f"order/{shop.order_id}" in table.out
