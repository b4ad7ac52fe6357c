"""Ops steering journeys over the API, on the dev server: a customer's journeys from
visibility, paged, with their rule version and a Temporal UI link; pausing, resuming and
ending one journey (audited); and the refusals."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from temporalio.client import Client, WorkflowExecutionStatus

from config.settings import Settings
from contracts import search_attributes as sa
from contracts import workflow_ids
from tests.conftest import ADMIN_KEY, Api, auth
from tests.factories import customer, eventually, now_iso, order_placed, uid

# A wait short enough for a test to cross, then one that a test never reaches the end of;
# a channel per step, so the frequency cap (one marketing message per channel in 16 h)
# holds none of them.
STEPS: list[dict[str, Any]] = [
    {"send": {"channels": ["email"], "template": "welcome"}},
    {"wait": "PT6S"},
    {"send": {"channels": ["sms"], "template": "welcome"}},
    {"wait": "P2D"},
    {"send": {"channels": ["whatsapp"], "template": "welcome"}},
]


async def _post(api: Api, path: str, key: str = ADMIN_KEY) -> httpx.Response:
    return await api.http.post(path, headers=auth(key))


async def _rule(api: Api, customer_id: str) -> str:
    created = await api.http.post(
        "/v1/rules",
        json={
            "name": "Welcome (ops)",
            "trigger": {"event": "customer.created"},
            "conditions": {"field": "customer.id", "op": "eq", "value": customer_id},
            "quiet_hours": None,
            "steps": STEPS,
        },
        headers=auth(ADMIN_KEY),
    )
    assert created.status_code == 201, created.text
    rule_id: str = created.json()["id"]
    assert (await _post(api, f"/v1/rules/{rule_id}/activate")).status_code == 200
    return rule_id


async def _signed_up(api: Api, customer_id: str) -> None:
    response = await api.post_event(
        {
            "id": uid("evt"),
            "type": "customer.created",
            "occurred_at": now_iso(),
            "customer": customer(customer_id, email=f"{customer_id}@example.com"),
            "data": {},
        }
    )
    assert response.status_code == 202


async def _messages(api: Api, customer_id: str) -> list[dict[str, Any]]:
    page = (await api.get(f"/v1/messages?customer_id={customer_id}")).json()["messages"]
    return [m for m in page if m["rule_id"]]


async def _sent(api: Api, customer_id: str) -> list[dict[str, Any]]:
    return [m for m in await _messages(api, customer_id) if m["status"] == "sent"]


async def _wait_started(temporal: Client, workflow_id: str) -> datetime | None:
    """When the journey's first wait began, from its history (None before it has)."""
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    for event in history.events:
        if event.HasField("timer_started_event_attributes"):
            return event.event_time.ToDatetime(tzinfo=UTC)
    return None


async def _at_least(api: Api, customer_id: str, count: int) -> list[dict[str, Any]] | None:
    sent = await _sent(api, customer_id)
    return sent if len(sent) >= count else None


async def _journey_status(temporal: Client, workflow_id: str) -> str | None:
    description = await temporal.get_workflow_handle(workflow_id).describe()
    return description.typed_search_attributes.get(sa.JOURNEY_STATUS)


async def test_a_paused_journey_sends_nothing_until_resumed_and_ends_by_ops(
    api: Api, temporal: Client, worker, settings: Settings
):
    customer_id = uid("c")
    rule_id = await _rule(api, customer_id)
    await _signed_up(api, customer_id)
    workflow_id = workflow_ids.journey(rule_id, customer_id)
    # Pause as soon as the wait begins, read from the history rather than from the first
    # email's status: the file's tests share one outbox, which this test's dispatcher
    # drains in order, so "sent" can lag the send by more than the wait (CI: > 15 s).
    wait_started = await eventually(
        lambda: _wait_started(temporal, workflow_id), within=45, what="the first wait"
    )

    paused = await _post(api, f"/v1/journeys/{workflow_id}/pause")
    assert paused.status_code == 200, paused.text
    assert datetime.now(UTC) < wait_started + timedelta(seconds=6), "paused too late to test"
    body = paused.json()
    assert (body["workflow_id"], body["workflow_type"], body["action"], body["status"]) == (
        workflow_id,
        "LifecycleJourney",
        "pause",
        "paused",
    )
    assert body["temporal_ui_url"].startswith(settings.temporal_ui_url.rstrip("/"))
    assert body["run_id"] in body["temporal_ui_url"]
    assert await _journey_status(temporal, workflow_id) == "paused"
    # The 6-second wait runs out while paused: its step is not even queued.
    await asyncio.sleep((wait_started + timedelta(seconds=8) - datetime.now(UTC)).total_seconds())
    assert [m["channel"] for m in await _messages(api, customer_id)] == ["email"]
    again = await _post(api, f"/v1/journeys/{workflow_id}/pause")
    assert (again.status_code, again.json()["status"]) == (200, "paused")

    resumed = await _post(api, f"/v1/journeys/{workflow_id}/resume")
    assert (resumed.status_code, resumed.json()["status"]) == (200, "running")
    # The step that fell due during the pause goes out at once on resume.
    await eventually(lambda: _at_least(api, customer_id, 2), within=45, what="the second step")
    assert await _journey_status(temporal, workflow_id) == "running"

    ended = await _post(api, f"/v1/journeys/{workflow_id}/end")
    assert ended.status_code == 200, ended.text
    assert (ended.json()["status"], ended.json()["exit_reason"]) == ("ended", "ended_by_ops")
    result = await temporal.get_workflow_handle(workflow_id).result()
    assert (result["status"], result["exit_reason"]) == ("ended", "ended_by_ops")
    assert len(await _sent(api, customer_id)) == 2
    # Ending it again answers the same; pausing an ended journey is refused.
    again = await _post(api, f"/v1/journeys/{workflow_id}/end")
    assert (again.status_code, again.json()["exit_reason"]) == (200, "ended_by_ops")
    refused = await _post(api, f"/v1/journeys/{workflow_id}/pause")
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "conflict"

    journeys = (await api.get(f"/v1/customers/{customer_id}/journeys")).json()["journeys"]
    [journey] = [j for j in journeys if j["workflow_id"] == workflow_id]
    assert journey["rule"]["exit_reason"] == "ended_by_ops"
    assert (journey["rule_id"], journey["rule_version"]) == (rule_id, 1)
    audit = (await api.get(f"/v1/audit?entity=journey&entity_id={workflow_id}")).json()
    assert [e["action"] for e in audit["entries"]] == ["end", "end", "resume", "pause", "pause"]
    assert {e["actor"] for e in audit["entries"]} == {"bootstrap admin"}
    await _post(api, f"/v1/rules/{rule_id}/archive")


async def _activity_summaries(temporal: Client, workflow_id: str) -> list[str]:
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    summaries = []
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            [text] = await temporal.data_converter.decode([event.user_metadata.summary], [str])
            summaries.append(text)
    return summaries


async def test_every_activity_a_journey_runs_says_what_it_does(api: Api, temporal: Client, worker):
    customer_id = uid("c")
    rule_id = await _rule(api, customer_id)
    await _signed_up(api, customer_id)
    workflow_id = workflow_ids.journey(rule_id, customer_id)
    await eventually(lambda: _at_least(api, customer_id, 1), what="the first email")
    ended = await _post(api, f"/v1/journeys/{workflow_id}/end")
    assert ended.status_code == 200, ended.text

    summaries = await _activity_summaries(temporal, workflow_id)

    assert summaries[:3] == [
        f"Enter rule {rule_id} for customer {customer_id}",
        f"Read customer {customer_id}'s profile for step 0",
        "Send welcome (attempt 1)",
    ]
    assert summaries[-1] == "Record the journey's exit: ended_by_ops"
    await _post(api, f"/v1/rules/{rule_id}/archive")


async def test_only_journeys_are_steered_and_only_by_ops(api: Api, temporal: Client, worker):
    assert (await _post(api, "/v1/journeys/journey/no_rule/no_one/pause")).status_code == 404
    order = order_placed(cart_id=None, customer_id=uid("c"))
    await api.post_event(order)
    order_workflow = workflow_ids.order(order["data"]["order_id"])

    async def started() -> bool:
        description = await temporal.get_workflow_handle(order_workflow).describe()
        return description.status == WorkflowExecutionStatus.RUNNING

    await eventually(started, what="the order's workflow")
    refused = await _post(api, f"/v1/journeys/{order_workflow}/end")
    assert refused.status_code == 409
    assert refused.json()["workflow_type"] == "OrderWorkflow"
    marketer = (
        await api.http.post(
            "/v1/api-keys",
            json={"name": "m", "scopes": ["rules:read", "rules:write"]},
            headers=auth(ADMIN_KEY),
        )
    ).json()["key"]
    forbidden = await _post(api, f"/v1/journeys/{order_workflow}/pause", key=marketer)
    assert forbidden.status_code == 403


async def test_a_customers_journeys_are_listed_a_page_at_a_time(
    api: Api, temporal: Client, worker, settings: Settings
):
    customer_id = uid("c")
    orders = [order_placed(cart_id=None, customer_id=customer_id) for _ in range(3)]
    for event in orders:
        await api.post_event(event)
    expected = {workflow_ids.order(e["data"]["order_id"]) for e in orders}

    async def listed() -> list[dict[str, Any]] | None:
        body = (await api.get(f"/v1/customers/{customer_id}/journeys")).json()
        return body["journeys"] if len(body["journeys"]) == 3 else None

    everything = await eventually(listed, what="the customer's three orders")
    assert {j["workflow_id"] for j in everything} == expected
    first = everything[0]
    assert first["workflow_type"] == "OrderWorkflow"
    assert first["order_id"] == first["workflow_id"].removeprefix("order/")
    assert first["status"] == "RUNNING"
    assert first["closed_at"] is None
    assert first["temporal_ui_url"] == (
        f"{settings.temporal_ui_url.rstrip('/')}/namespaces/{temporal.namespace}/workflows/"
        f"order%2F{first['order_id']}/{first['run_id']}/history"
    )

    seen: list[str] = []
    cursor = None
    for _ in range(5):
        query = f"/v1/customers/{customer_id}/journeys?limit=2"
        page = (await api.get(query + (f"&cursor={cursor}" if cursor else ""))).json()
        assert len(page["journeys"]) <= 2
        seen += [j["workflow_id"] for j in page["journeys"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(expected)
    for garbage in ("%%%", "nonsense"):
        refused = await api.get(f"/v1/customers/{customer_id}/journeys?cursor={garbage}")
        assert refused.status_code == 422, (garbage, refused.text)
        assert refused.json()["fields"][0]["loc"] == ["query", "cursor"]
    assert (await api.get(f"/v1/customers/{uid('nobody')}/journeys")).status_code == 404
