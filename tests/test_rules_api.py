"""Rules over the API: validation that names the problem, versions, status, audit trail,
preview; and the whole journey end to end on the dev server with waits of seconds."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from contracts.carts import CartState
from contracts.names import STATE_QUERY
from db.models import Coupon
from services.journeys.rules import DEFAULT_ABANDONED_CART
from tests.conftest import ADMIN_KEY, Api, auth
from tests.factories import cart_updated, eventually, order_placed, uid


def _rule(**changes: Any) -> dict[str, Any]:
    rule = copy.deepcopy(DEFAULT_ABANDONED_CART)
    rule.update(changes)
    return rule


async def _create(api: Api, rule: dict[str, Any]) -> Any:
    return await api.http.post("/v1/rules", json=rule, headers=auth(ADMIN_KEY))


@pytest.mark.parametrize(
    ("change", "loc", "message"),
    [
        pytest.param(
            {"steps": [{"send": {"channels": ["email"], "template": "no_such_template"}}]},
            ["body", "steps", 0, "send", "template"],
            "unknown template 'no_such_template'",
            id="unknown-template",
        ),
        pytest.param(
            {"steps": [{"send": {"channels": ["pigeon"], "template": "cart_reminder_1"}}]},
            ["body", "steps", 0, "send", "channels", 0],
            "'email', 'sms' or 'whatsapp'",
            id="unknown-channel",
        ),
        pytest.param(
            {"steps": [{"wait": "-PT1H"}]},
            ["body", "steps", 0, "wait"],
            "negative",
            id="negative-duration",
        ),
        pytest.param(
            {"steps": [{"wait": "a while"}]},
            ["body", "steps", 0, "wait"],
            "timedelta",
            id="unparseable-duration",
        ),
        pytest.param({"steps": []}, ["body", "steps"], "at least 1 item", id="empty-steps"),
        pytest.param(
            {
                "steps": [
                    {
                        "split": [
                            {"weight": 70, "steps": []},
                            {"weight": 20, "steps": []},
                        ]
                    }
                ]
            },
            ["body", "steps", 0, "split"],
            "add up to 100, not 90",
            id="split-weights",
        ),
        pytest.param(
            {"conditions": {"field": "cart.totl", "op": "gte", "value": "100"}},
            ["body", "conditions", "field"],
            "unknown field 'cart.totl'",
            id="unknown-condition-field",
        ),
        pytest.param(
            {"trigger": {"event": "cart.abandoned", "after": "PT0S"}},
            ["body", "trigger", "after"],
            "longer than zero",
            id="zero-after",
        ),
        pytest.param(
            {"steps": [{"teleport": "now"}]},
            ["body", "steps", 0],
            "a step is exactly one of",
            id="unknown-step",
        ),
    ],
)
async def test_invalid_rules_are_refused_naming_the_problem(
    api: Api, change: dict[str, Any], loc: list[Any], message: str
):
    response = await _create(api, _rule(**change))

    assert response.status_code == 422, response.text
    field = response.json()["fields"][0]
    assert field["loc"] == loc
    assert message in field["msg"]


async def test_a_rule_is_created_as_a_draft_and_versioned_with_an_audit_trail(api: Api):
    created = await _create(api, _rule(name="Carts over Rs 5,000"))
    assert created.status_code == 201
    rule = created.json()
    assert (rule["status"], rule["version"], rule["versions"]) == ("draft", 1, [1])
    assert rule["definition"]["trigger"] == {"event": "cart.abandoned", "after": "PT1H"}

    updated = await api.http.put(
        f"/v1/rules/{rule['id']}",
        json=_rule(name="Carts over Rs 5,000, v2", attribution_window="P7D"),
        headers=auth(ADMIN_KEY),
    )
    activated = await api.http.post(f"/v1/rules/{rule['id']}/activate", headers=auth(ADMIN_KEY))
    paused = await api.http.post(
        f"/v1/rules/{rule['id']}/pause", json={"running": "drain"}, headers=auth(ADMIN_KEY)
    )
    again = await api.http.post(f"/v1/rules/{rule['id']}/activate", headers=auth(ADMIN_KEY))
    archived = await api.http.post(f"/v1/rules/{rule['id']}/archive", headers=auth(ADMIN_KEY))
    revived = await api.http.post(f"/v1/rules/{rule['id']}/activate", headers=auth(ADMIN_KEY))

    assert updated.json()["version"] == 2
    assert updated.json()["definition"]["attribution_window"] == "P7D"
    assert activated.json()["status"] == "active"
    assert paused.json()["status"] == "paused"
    assert again.json()["status"] == "active"
    assert archived.json()["status"] == "archived"
    assert revived.status_code == 409
    first = await api.get(f"/v1/rules/{rule['id']}/versions/1")
    assert first.json()["definition"]["name"] == "Carts over Rs 5,000"
    trail = (await api.get(f"/v1/rules/{rule['id']}/audit")).json()
    assert [(a["action"], a["version"]) for a in trail] == [
        ("created", 1),
        ("updated", 2),
        ("active", 2),
        ("paused", 2),
        ("active", 2),
        ("archived", 2),
    ]
    assert {a["actor"] for a in trail} == {"bootstrap admin"}
    assert trail[3]["details"] == {"running": "drain"}


async def test_preview_renders_every_step_without_sending(api: Api):
    rule = (await _create(api, _rule())).json()

    response = await api.http.post(
        f"/v1/rules/{rule['id']}/preview",
        json={"locale": "ur-PK", "cart": {"first_item_name": "Silk dupatta"}},
        headers=auth(ADMIN_KEY),
    )

    assert response.status_code == 200
    steps = response.json()
    assert [s["step"] for s in steps] == ["0", "2", "4", "6"]
    assert [s["incentive"]["percent_off"] if s["incentive"] else 0 for s in steps] == [0, 5, 10, 15]
    step2_email = next(m for m in steps[1]["messages"] if m["channel"] == "email")
    assert step2_email["locale"] == "ur"
    assert "Silk dupatta" in step2_email["subject"]
    assert "PREVIEW-CODE" in step2_email["text"]
    assert [m["channel"] for m in steps[2]["messages"]] == ["email", "sms"]
    messages = (await api.get(f"/v1/messages?rule_id={rule['id']}")).json()["messages"]
    assert messages == []


async def test_rules_need_their_scopes(api: Api):
    reader = (
        await api.http.post(
            "/v1/api-keys", json={"name": "r", "scopes": ["rules:read"]}, headers=auth(ADMIN_KEY)
        )
    ).json()["key"]

    assert (await api.get("/v1/rules", key=reader)).status_code == 200
    refused = await api.http.post("/v1/rules", json=_rule(), headers=auth(reader))
    assert refused.status_code == 403


async def test_a_rule_with_second_long_waits_runs_end_to_end(
    api: Api, temporal: Client, worker, sessionmaker: async_sessionmaker[AsyncSession]
):
    """Over the API, on the dev server: a rule, events, messages in order in the ledger,
    and coupons that can be redeemed exactly once."""
    customer_id = uid("c")
    rule = _rule(
        name="Fast abandoned cart",
        priority=1,
        trigger={"event": "cart.abandoned", "after": "PT2S"},
        conditions={"field": "customer.id", "op": "eq", "value": customer_id},
        quiet_hours=None,
        steps=[
            {"send": {"channels": ["email"], "template": "cart_reminder_1"}},
            {"wait": "PT2S"},
            {
                "send": {
                    "channels": ["sms"],
                    "template": "cart_reminder_2",
                    "incentive": {"percent_off": 5, "expires_in": "P2D"},
                    "cap_policy": "skip",
                }
            },
            {"wait": "PT2S"},
            {
                "send": {
                    "channels": ["email"],
                    "template": "cart_reminder_3",
                    "incentive": {"percent_off": 10, "expires_in": "P2D"},
                    "cap_policy": "skip",
                }
            },
        ],
    )
    created = (await _create(api, rule)).json()
    activate = await api.http.post(f"/v1/rules/{created['id']}/activate", headers=auth(ADMIN_KEY))
    assert activate.status_code == 200
    try:
        await _run_fast_rule(api, temporal, customer_id, created["id"])
    finally:
        # Its 2-second idle time would otherwise define abandonment for every later cart.
        await api.http.post(f"/v1/rules/{created['id']}/archive", headers=auth(ADMIN_KEY))


async def _run_fast_rule(api: Api, temporal: Client, customer_id: str, rule_id: str) -> None:
    cart = cart_updated(customer_id=customer_id)
    cart_id = cart["data"]["cart_id"]

    assert (await api.post_event(cart)).status_code == 202

    async def three_messages() -> list[dict[str, Any]] | None:
        page = (await api.get(f"/v1/messages?cart_id={cart_id}")).json()["messages"]
        return page if len(page) == 3 else None

    messages = list(reversed(await eventually(three_messages, within=40, what="three messages")))
    assert [(m["template"], m["channel"], m["status"]) for m in messages] == [
        ("cart_reminder_1", "email", "sent"),
        ("cart_reminder_2", "sms", "sent"),
        ("cart_reminder_3", "email", "suppressed"),  # 16 h cap on email, skip policy
    ]
    assert messages[2]["reason"] == "frequency_cap"
    assert all(m["rule_id"] == rule_id and m["rule_version"] == 1 for m in messages)
    five = messages[1]["coupon_code"]
    ten = await _coupon_of(api, cart_id, 10)
    # The 10% message never went out: its code is voided (by the journey's next activity,
    # just after the ledger says so) and the 5% one still holds.

    async def ten_revoked() -> bool:
        return (await api.get(f"/v1/coupons/{ten}")).json()["status"] == "revoked"

    await eventually(ten_revoked, what="the unsent 10% code to be revoked")
    coupon = (await api.get(f"/v1/coupons/{five}")).json()
    assert (coupon["percent_off"], coupon["valid"], coupon["cart_id"]) == (5, True, cart_id)

    redeemed = await api.http.post(
        f"/v1/coupons/{five}/redeem", json={"order_id": "o1"}, headers=auth(ADMIN_KEY)
    )
    twice = await api.http.post(f"/v1/coupons/{five}/redeem", headers=auth(ADMIN_KEY))

    assert redeemed.status_code == 200
    assert redeemed.json()["status"] == "redeemed"
    assert twice.status_code == 409
    assert twice.json()["coupon_status"] == "redeemed"

    order = order_placed(cart_id=cart_id, customer_id=customer_id)
    await api.post_event(order)
    result = await asyncio.wait_for(temporal.get_workflow_handle(f"cart/{cart_id}").result(), 20)
    assert result["status"] == "converted"


async def _coupon_of(api: Api, cart_id: str, percent: int) -> str:
    async with api.app.state.sessionmaker() as session:
        code = await session.scalar(
            select(Coupon.code).where(Coupon.cart_id == cart_id, Coupon.percent_off == percent)
        )
    assert code is not None
    return str(code)


async def test_a_marketer_test_run_sends_the_whole_sequence_in_seconds(
    api: Api, temporal: Client, worker
):
    customer_id = uid("tester")
    await api.post_event(cart_updated(customer_id=customer_id, items=[]))
    rule = (await _create(api, _rule(name="Test me"))).json()  # a draft is fine to test

    response = await api.http.post(
        f"/v1/rules/{rule['id']}/test",
        json={"customer_id": customer_id, "speed": 100_000},
        headers=auth(ADMIN_KEY),
    )

    assert response.status_code == 202, response.text
    cart_id = response.json()["cart_id"]

    async def all_sent() -> list[dict[str, Any]] | None:
        page = (await api.get(f"/v1/messages?cart_id={cart_id}")).json()["messages"]
        sent = [m for m in page if m["status"] == "sent"]
        return sent if len(sent) >= 5 else None

    sent = list(reversed(await eventually(all_sent, within=60, what="the whole sequence")))
    assert [m["template"] for m in sent] == [
        "cart_reminder_1",
        "cart_reminder_2",
        "cart_reminder_3",
        "cart_reminder_3",
        "cart_reminder_4",
    ]
    missing = await api.http.post(
        f"/v1/rules/{rule['id']}/test", json={"customer_id": "nobody"}, headers=auth(ADMIN_KEY)
    )
    assert missing.status_code == 404


async def _running_rule(api: Api, customer_id: str, **changes: Any) -> str:
    rule = _rule(
        name="Slow",
        priority=1,
        trigger={"event": "cart.abandoned", "after": "PT1S"},
        conditions={"field": "customer.id", "op": "eq", "value": customer_id},
        quiet_hours=None,
        steps=[
            {"send": {"channels": ["email"], "template": "cart_reminder_1"}},
            {"wait": "PT1H"},
            {"send": {"channels": ["email"], "template": "cart_reminder_1"}},
        ],
        **changes,
    )
    created = (await _create(api, rule)).json()
    await api.http.post(f"/v1/rules/{created['id']}/activate", headers=auth(ADMIN_KEY))
    return str(created["id"])


async def _journey_exit(temporal: Client, cart_id: str) -> str | None:
    state = await temporal.get_workflow_handle(f"cart/{cart_id}").query(
        STATE_QUERY, result_type=CartState
    )
    return state.journey.exit_reason if state.journey else None


async def _first_message_sent(api: Api, cart_id: str) -> bool:
    page = (await api.get(f"/v1/messages?cart_id={cart_id}")).json()["messages"]
    return any(m["status"] == "sent" for m in page)


async def test_pausing_a_rule_with_end_stops_its_running_journeys(
    api: Api, temporal: Client, worker
):
    customer_id = uid("c")
    rule_id = await _running_rule(api, customer_id)
    try:
        cart = cart_updated(customer_id=customer_id)
        await api.post_event(cart)
        cart_id = cart["data"]["cart_id"]
        await eventually(lambda: _first_message_sent(api, cart_id), what="the first message")

        paused = await api.http.post(
            f"/v1/rules/{rule_id}/pause", json={"running": "end"}, headers=auth(ADMIN_KEY)
        )

        assert paused.json()["status"] == "paused"
        assert (
            await eventually(lambda: _journey_exit(temporal, cart_id), what="the journey to end")
            == "rule_paused"
        )
        # A new cart no longer enters the paused rule.
        other = cart_updated(customer_id=customer_id)
        await api.post_event(other)
        await asyncio.sleep(3)
        page = (await api.get(f"/v1/messages?cart_id={other['data']['cart_id']}")).json()
        assert page["messages"] == []
    finally:
        await api.http.post(f"/v1/rules/{rule_id}/archive", headers=auth(ADMIN_KEY))


async def test_any_order_by_the_customer_ends_a_customer_scoped_journey(
    api: Api, temporal: Client, worker
):
    customer_id = uid("c")
    rule_id = await _running_rule(
        api, customer_id, exit={"events": ["order.placed"], "order_scope": "customer"}
    )
    try:
        cart = cart_updated(customer_id=customer_id)
        await api.post_event(cart)
        cart_id = cart["data"]["cart_id"]
        await eventually(lambda: _first_message_sent(api, cart_id), what="the first message")

        await api.post_event(order_placed(cart_id=uid("another-cart"), customer_id=customer_id))

        assert (
            await eventually(lambda: _journey_exit(temporal, cart_id), what="the journey to end")
            == "ordered"
        )
    finally:
        await api.http.post(f"/v1/rules/{rule_id}/archive", headers=auth(ADMIN_KEY))
