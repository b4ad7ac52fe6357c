"""README "Operating it" lists ready-made Temporal visibility queries. This runs each one
exactly as the README writes it (parsed out of it, so the doc cannot drift) against a dev
server of its own, over a database of its own, holding a known set of workflows, and
checks each finds exactly the workflows it should."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from contracts import search_attributes
from contracts.payment_policy import PaymentPolicy
from contracts.rules import RuleDefinition
from db.engine import create_engine, create_sessionmaker
from db.migrate import upgrade
from db.models import Rule, RuleVersion
from embedded.binaries import temporal_cli
from services.journeys import rules
from tests.conftest import (
    ADMIN_KEY,
    Api,
    auth,
    create_database,
    drop_database,
    make_settings,
    start_api,
)
from tests.factories import customer, eventually, now_iso, order_placed, uid
from worker import build_worker

README = Path(__file__).parents[1] / "README.md"
RULE_ID = "rule_0a1b2c3d4e5f"
SHIP_WITHIN = timedelta(seconds=6)
WELCOME: dict[str, Any] = {
    "name": "Welcome (ops queries)",
    "trigger": {"event": "customer.created"},
    "quiet_hours": None,
    "steps": [
        {"send": {"channels": ["email"], "template": "welcome"}},
        {"wait": "P2D"},
        {"send": {"channels": ["email"], "template": "welcome"}},
    ],
    # An order does not end it: c_2's order must leave c_2's journey paused.
    "exit": {"events": ["unsubscribed"]},
}

# What each README query must find, by its "to find" words, once the shop below is built.
EXPECTED = {
    "partial-COD orders awaiting payment": {"order/o_1"},
    "journeys of customer c_1 (carts, orders, lifecycle journeys)": {
        "order/o_1",
        "order/o_2",
        f"journey/{RULE_ID}/c_1",
    },
    "orders past their SLA": {"order/o_2"},
    f"running journeys of rule {RULE_ID} version 2": {f"journey/{RULE_ID}/c_1"},
    "journeys paused by ops": {f"journey/{RULE_ID}/c_2"},
    "COD orders confirmed and not yet shipped": {"order/o_2"},
    "everything about order o_2": {"order/o_2"},
}


def readme_queries() -> dict[str, str]:
    """The README's table between the visibility-queries markers: "to find" -> query."""
    text = README.read_text()
    table = text.split("<!-- visibility-queries -->", 1)[1].split("<!-- /visibility-queries -->")[0]
    rows = re.findall(r"^\s*\|\s*([^|`]+?)\s*\|\s*`([^`]+)`\s*\|\s*$", table, re.MULTILINE)
    return dict(rows)


def test_the_readme_lists_the_queries_this_file_checks():
    assert set(readme_queries()) == set(EXPECTED)


class Shop:
    def __init__(self, api: Api, client: Client) -> None:
        self.api = api
        self.client = client


@pytest.fixture(scope="module")
async def shop(admin_url: str) -> AsyncIterator[Shop]:
    """A dev server and a database that hold only this file's workflows."""
    name = f"sutra_queries_{secrets.token_hex(4)}"
    url = create_database(admin_url, name)
    upgrade(url)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        data_converter=pydantic_data_converter,
        search_attributes=search_attributes.ALL,
        dev_server_log_level="error",
    )
    settings = make_settings(
        url,
        env.client.service_client.config.target_host,
        f"tq-{uid('q')}",
        payment_policy=PaymentPolicy(ship_within=SHIP_WITHIN),
    )
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    api, manager = await start_api(settings)
    try:
        async with build_worker(env.client, settings.temporal_task_queue, sessionmaker, settings):
            await _build(Shop(api, env.client), sessionmaker)
            yield Shop(api, env.client)
    finally:
        await api.http.aclose()
        await manager.__aexit__(None, None, None)
        await engine.dispose()
        await env.shutdown()
        drop_database(admin_url, name)


async def _welcome_rule(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """The README's example rule id, at version 1 (ids are otherwise drawn at random)."""
    definition = RuleDefinition.model_validate(WELCOME)
    async with sessionmaker() as session, session.begin():
        session.add(
            Rule(
                id=RULE_ID,
                name=definition.name,
                trigger_event="customer.created",
                status="active",
                version=1,
                priority=definition.priority,
            )
        )
        await session.flush()
        session.add(
            RuleVersion(
                rule_id=RULE_ID,
                version=1,
                definition=definition.model_dump(mode="json", by_alias=True),
            )
        )


async def _signed_up(shop: Shop, customer_id: str) -> None:
    event = {
        "id": uid("evt"),
        "type": "customer.created",
        "occurred_at": now_iso(),
        "customer": customer(customer_id, email=f"{customer_id}@example.com"),
        "data": {},
    }
    assert (await shop.api.post_event(event)).status_code == 202


async def _entered(shop: Shop, customer_id: str, version: int) -> bool:
    description = await shop.client.get_workflow_handle(
        f"journey/{RULE_ID}/{customer_id}"
    ).describe()
    return description.typed_search_attributes.get(search_attributes.RULE_VERSION) == version


async def _order(shop: Shop, order_id: str, customer_id: str, payment_type: str) -> None:
    event = order_placed(order_id, cart_id=None, customer_id=customer_id)
    event["data"]["payment_type"] = payment_type
    assert (await shop.api.post_event(event)).status_code == 202


async def _status(shop: Shop, order_id: str, status: str) -> bool:
    response = await shop.api.get(f"/v1/orders/{order_id}")
    return response.status_code == 200 and response.json()["status"] == status


async def _build(shop: Shop, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """c_2 enters the welcome rule at version 1 and is paused by ops; the rule becomes
    version 2 and c_1 enters it. c_1 has a partial-COD order awaiting its upfront payment
    (o_1) and a COD order confirmed and never shipped (o_2, past its SLA); c_2's COD order
    o_3 shipped in time."""
    await _welcome_rule(sessionmaker)
    await _signed_up(shop, "c_2")
    await eventually(lambda: _entered(shop, "c_2", 1), what="c_2 in the rule at v1")
    async with sessionmaker() as session, session.begin():
        await rules.update(
            session,
            RULE_ID,
            RuleDefinition.model_validate({**WELCOME, "name": "Welcome v2"}),
            rules.Actor(key_id=None, name="tests"),
        )
    await _signed_up(shop, "c_1")
    await eventually(lambda: _entered(shop, "c_1", 2), what="c_1 in the rule at v2")
    paused = await shop.api.http.post(
        f"/v1/journeys/journey/{RULE_ID}/c_2/pause", headers=auth(ADMIN_KEY)
    )
    assert paused.status_code == 200, paused.text

    await _order(shop, "o_1", "c_1", "partial_cod")
    await _order(shop, "o_2", "c_1", "cod")
    await _order(shop, "o_3", "c_2", "cod")
    await eventually(lambda: _status(shop, "o_3", "confirmed"), what="o_3 confirmed")
    for to in ("packed", "shipped"):
        # Right after a read said "confirmed": a move the workflow first judged on the
        # state before that read's event is tried again by the API (api/orders.py _move).
        moved = await shop.api.http.post(
            "/v1/orders/o_3/transitions", json={"to": to}, headers=auth(ADMIN_KEY)
        )
        assert moved.status_code == 200, moved.text
    await eventually(lambda: _status(shop, "o_1", "awaiting_payment"), what="o_1 waiting")
    await eventually(lambda: _status(shop, "o_2", "confirmed"), what="o_2 confirmed")


async def _found(client: Client, query: str) -> set[str]:
    return {execution.id async for execution in client.list_workflows(query)}


@pytest.mark.parametrize("what", sorted(EXPECTED))
async def test_each_readme_query_finds_exactly_its_workflows(shop: Shop, what: str):
    query = readme_queries()[what]
    expected = EXPECTED[what]

    async def matches() -> set[str] | None:
        found = await _found(shop.client, query)
        return found if found == expected else None

    # Visibility trails the workflows by a moment; the SLA falls due SHIP_WITHIN after o_2
    # was confirmed.
    try:
        await eventually(matches, within=30, what=f"{what!r}")
    except AssertionError:
        assert await _found(shop.client, query) == expected, query
