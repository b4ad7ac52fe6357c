"""Lifecycle rules end to end on the dev server: a rule made and activated over the API,
an event through POST /v1/events, the journey in Temporal, the message in the ledger; and
a marketer's test run of a lifecycle rule."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client

from contracts import workflow_ids
from tests.conftest import ADMIN_KEY, Api, auth
from tests.factories import customer, eventually, now_iso, uid


async def _sent(api: Api, customer_id: str, count: int) -> list[dict[str, Any]] | None:
    page = (await api.get(f"/v1/messages?customer_id={customer_id}")).json()["messages"]
    sent = [m for m in page if m["status"] == "sent" and m["rule_id"]]
    return sent if len(sent) >= count else None


async def test_a_customer_created_event_starts_an_active_welcome_rule(
    api: Api, temporal: Client, worker
):
    customer_id = uid("c")
    rule = (
        await api.http.post(
            "/v1/rules",
            json={
                "name": "Welcome",
                "trigger": {"event": "customer.created"},
                "conditions": {"field": "customer.id", "op": "eq", "value": customer_id},
                "quiet_hours": None,
                "steps": [
                    {"send": {"channels": ["email"], "template": "welcome"}},
                    {"wait": "P2D"},
                    {"send": {"channels": ["email"], "template": "welcome"}},
                ],
            },
            headers=auth(ADMIN_KEY),
        )
    ).json()
    activated = await api.http.post(f"/v1/rules/{rule['id']}/activate", headers=auth(ADMIN_KEY))
    assert activated.status_code == 200, activated.text

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

    [welcome] = await eventually(lambda: _sent(api, customer_id, 1), what="the welcome email")
    assert (welcome["template"], welcome["rule_id"], welcome["step"]) == (
        "welcome",
        rule["id"],
        "0",
    )
    journeys = await eventually(
        lambda: _journeys(api, customer_id), what="the journey listed for the customer"
    )
    # Every active customer.created rule starts a journey that checks its own conditions:
    # rules other tests left active add journeys that end at once, not entered.
    [journey] = [
        j for j in journeys if j["workflow_id"] == workflow_ids.journey(rule["id"], customer_id)
    ]
    assert journey["workflow_type"] == "LifecycleJourney"
    assert (journey["status"], journey["journey_status"]) == ("RUNNING", "running")
    assert (journey["rule"]["rule_id"], journey["rule"]["rule_version"]) == (rule["id"], 1)
    # Archiving ends the journey (its second message is two days away) and keeps this
    # rule from starting journeys for other tests' customers.
    archived = await api.http.post(f"/v1/rules/{rule['id']}/archive", headers=auth(ADMIN_KEY))
    assert archived.status_code == 200
    handle = temporal.get_workflow_handle(workflow_ids.journey(rule["id"], customer_id))
    ended = await handle.result()
    assert ended["exit_reason"] == "rule_paused"


async def _journeys(api: Api, customer_id: str) -> list[dict[str, Any]] | None:
    response = await api.get(f"/v1/customers/{customer_id}/journeys")
    journeys = response.json()["journeys"]
    entered = [j for j in journeys if j["rule"] and j["journey_status"] == "running"]
    return journeys if entered else None


async def test_a_marketer_test_run_of_a_post_purchase_rule_sends_every_step(
    api: Api, temporal: Client, worker
):
    customer_id = uid("tester")
    await api.post_event(
        {
            "id": uid("evt"),
            "type": "customer.updated",
            "occurred_at": now_iso(),
            "customer": customer(customer_id, email=f"{customer_id}@example.com"),
            "data": {},
        }
    )
    rule = (
        await api.http.post(
            "/v1/rules",
            json={
                "name": "Post-purchase (draft)",
                "trigger": {"event": "order.delivered"},
                "steps": [
                    {"send": {"channels": ["email"], "template": "order_delivered"}},
                    {"wait": "P3D"},
                    {"send": {"channels": ["email"], "template": "review_request"}},
                ],
                "exit": {"events": ["unsubscribed"]},
            },
            headers=auth(ADMIN_KEY),
        )
    ).json()

    response = await api.http.post(
        f"/v1/rules/{rule['id']}/test",
        json={"customer_id": customer_id, "speed": 86400},
        headers=auth(ADMIN_KEY),
    )

    assert response.status_code == 202, response.text
    assert response.json()["cart_id"] is None
    sent = await eventually(lambda: _sent(api, customer_id, 2), within=60, what="both steps")
    assert sorted(m["template"] for m in sent) == ["order_delivered", "review_request"]
    result = await temporal.get_workflow_handle(response.json()["workflow_id"]).result()
    assert result["exit_reason"] == "completed"
