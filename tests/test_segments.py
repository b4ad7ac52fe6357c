"""Segments over the HTTP API: definitions, members paged by cursor, scopes, and rules
requiring segment membership."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pydantic
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.conditions import evaluate
from contracts.rules import RuleDefinition
from services.customers import profiles, segments
from tests.conftest import ADMIN_KEY, Api, auth, make_settings, start_api
from tests.factories import customer, uid


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[Api]:
    """The real app on the test database; segments need no Temporal, so none runs."""
    settings = make_settings(database_url, "127.0.0.1:1", "tq-segments", dispatcher_enabled=False)
    client, manager = await start_api(settings)
    yield client
    await client.http.aclose()
    await manager.__aexit__(None, None, None)


def iso(days_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).isoformat()


def order(
    customer_id: str,
    run: str,
    *,
    days_ago: float,
    total: str = "1000.00",
    city: str = "Lahore",
    country: str = "PK",
    coupon: bool = False,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "order_id": uid("ord"),
        "items": [{"sku": uid("SKU"), "name": "Lawn suit", "quantity": 1, "unit_price": total}],
        "total": total,
        "currency": "PKR",
        "payment_type": "cod",
        "shipping": {"city": city, "country": country},
    }
    if coupon:
        data["coupon_code"] = "SAVE10"
    return {
        "id": uid("evt"),
        "type": "order.placed",
        "occurred_at": iso(days_ago),
        "customer": customer(customer_id, run=run),
        "data": data,
    }


def signed_up(customer_id: str, run: str) -> dict[str, Any]:
    return {
        "id": uid("evt"),
        "type": "customer.created",
        "occurred_at": iso(1),
        "customer": customer(customer_id, run=run),
    }


def of_run(run: str, condition: dict[str, Any]) -> dict[str, Any]:
    """Limit a segment to this test's customers: the database is shared by the run."""
    return {"all": [{"field": "customer.attributes.run", "op": "eq", "value": run}, condition]}


async def send(api: Api, events: list[dict[str, Any]]) -> None:
    response = await api.post_batch(events)
    assert response.status_code < 300, response.text
    body = response.json()
    results = body["results"] if isinstance(body, dict) else body
    assert {r["status"] for r in results} == {"accepted"}, results


async def create(api: Api, conditions: dict[str, Any], key: str = ADMIN_KEY) -> httpx.Response:
    return await api.http.post(
        "/v1/segments",
        json={"name": "test", "conditions": conditions},
        headers=auth(key),
    )


async def member_ids(
    api: Api, segment_id: str, limit: int = 100, *, after: str | None = None
) -> list[str]:
    """Every member, page by page. ``after``: the run's id prefix, to page only through
    the run's own stretch of a database other tests fill (ids sort by run): from just
    before its first customer until the scan has passed its last."""
    ids: list[str] = []
    cursor: str | None = segments.encode_cursor(after) if after else None
    for _ in range(1000):
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        response = await api.http.get(
            f"/v1/segments/{segment_id}/customers", params=params, headers=auth(ADMIN_KEY)
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["customers"]) <= limit
        ids += [c["id"] for c in page["customers"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
        if after and not segments.decode_cursor(cursor).startswith(after):
            return ids
    raise AssertionError("the cursor never ended")


@pytest.fixture
async def shoppers(api: Api) -> dict[str, str]:
    """Customers of distinct kinds, all tagged with one run id."""
    run = uid("run")
    who = {k: f"{run}_{k}" for k in ("new", "loyal", "whale", "bargain", "lapsed", "karachi")}
    events = [
        order(who["new"], run, days_ago=2),
        *[order(who["loyal"], run, days_ago=d) for d in (40, 20, 5)],
        order(who["whale"], run, days_ago=3, total="25000.00"),
        order(who["whale"], run, days_ago=1, total="30000.00"),
        order(who["bargain"], run, days_ago=10, coupon=True),
        order(who["bargain"], run, days_ago=9, coupon=True),
        order(who["bargain"], run, days_ago=8),
        *[order(who["lapsed"], run, days_ago=d) for d in (300, 250, 200)],
        order(who["karachi"], run, days_ago=4, city="Karachi"),
        signed_up(f"{run}_browser", run),
    ]
    await send(api, events)
    return {"run": run, **who, "browser": f"{run}_browser"}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        pytest.param(
            {"field": "customer.orders_count", "op": "eq", "value": 1},
            {"new", "karachi"},
            id="first-time",
        ),
        pytest.param(
            {"field": "customer.orders_count", "op": "gte", "value": 2},
            {"loyal", "whale", "bargain", "lapsed"},
            id="repeat",
        ),
        pytest.param(
            {"field": "customer.total_spent", "op": "gte", "value": "10000"},
            {"whale"},
            id="high-value",
        ),
        pytest.param(
            {"field": "customer.coupon_usage_rate", "op": "gte", "value": "0.5"},
            {"bargain"},
            id="price-sensitive",
        ),
        pytest.param(
            {"field": "customer.city", "op": "eq", "value": "karachi"},
            {"karachi"},
            id="city",
        ),
        pytest.param(
            {
                "all": [
                    {"field": "customer.country", "op": "eq", "value": "PK"},
                    {"not": {"field": "customer.city", "op": "eq", "value": "Karachi"}},
                ]
            },
            {"new", "loyal", "whale", "bargain", "lapsed"},
            id="country-not-city",
        ),
        pytest.param(
            {
                "all": [
                    {"field": "customer.orders_count", "op": "gte", "value": 3},
                    {"field": "customer.days_since_last_order", "op": "lte", "value": 30},
                ]
            },
            {"loyal", "bargain"},
            id="frequent-and-recent",
        ),
        pytest.param(
            {"field": "customer.days_since_last_order", "op": "gt", "value": 90},
            {"lapsed"},
            id="lapsed",
        ),
        pytest.param(
            {"not": {"field": "customer.orders_count", "op": "gte", "value": 1}},
            {"browser"},
            id="never-ordered",
        ),
    ],
)
async def test_segments_find_the_customers_they_describe(
    api: Api, shoppers: dict[str, str], condition: dict[str, Any], expected: set[str]
):
    created = await create(api, of_run(shoppers["run"], condition))
    assert created.status_code == 201, created.text
    segment = created.json()
    assert segment["id"].startswith("seg_")

    assert set(await member_ids(api, segment["id"])) == {shoppers[k] for k in expected}


async def test_members_show_key_attributes(api: Api, shoppers: dict[str, str]):
    condition = {"field": "customer.total_spent", "op": "gte", "value": "10000"}
    segment = (await create(api, of_run(shoppers["run"], condition))).json()

    # The first page may hold nobody: it scans at most SCAN_BUDGET of the shop's customers.
    pages: list[dict[str, Any]] = []
    cursor = None
    while not pages or cursor:
        query = f"?cursor={cursor}" if cursor else ""
        page = (await api.get(f"/v1/segments/{segment['id']}/customers{query}")).json()
        pages += page["customers"]
        cursor = page["next_cursor"]

    [whale] = pages
    assert whale["id"] == shoppers["whale"]
    assert whale["email"] == "ayesha@example.com"
    assert whale["orders_count"] == 2
    assert whale["total_spent"] == "55000.00"
    assert (whale["city"], whale["country"]) == ("Lahore", "PK")


async def test_members_page_through_without_duplicates_or_gaps(
    api: Api, monkeypatch: pytest.MonkeyPatch
):
    run = uid("run")
    members = [f"{run}_{i:03d}" for i in range(0, 46, 2)]  # every other customer
    others = [f"{run}_{i:03d}" for i in range(1, 46, 2)]
    await send(
        api,
        [order(cid, run, days_ago=1, total="5000.00") for cid in members]
        + [order(cid, run, days_ago=1, total="50.00") for cid in others],
    )
    condition = {"field": "customer.total_spent", "op": "gte", "value": "1000"}
    segment = (await create(api, of_run(run, condition))).json()

    # Pages full to the limit, then pages cut short by the scan budget (as big shops see
    # at 5,000 rows): either way each member once, in id order, none missing.
    assert await member_ids(api, segment["id"], limit=4) == sorted(members)
    monkeypatch.setattr(segments, "SCAN_BUDGET", 7)
    assert await member_ids(api, segment["id"], limit=4, after=run) == sorted(members)
    monkeypatch.setattr(segments, "SCAN_BUDGET", 2)
    assert await member_ids(api, segment["id"], limit=3, after=run) == sorted(members)


async def test_a_page_may_end_short_of_the_limit_and_still_go_on(
    api: Api, monkeypatch: pytest.MonkeyPatch
):
    run = uid("run")
    await send(api, [order(f"{run}_{i}", run, days_ago=1) for i in range(5)])
    segment = (
        await create(api, of_run(run, {"field": "customer.orders_count", "op": "eq", "value": 1}))
    ).json()
    monkeypatch.setattr(segments, "SCAN_BUDGET", 1)

    response = await api.get(f"/v1/segments/{segment['id']}/customers?limit=10")

    page = response.json()
    assert len(page["customers"]) <= 1
    assert page["next_cursor"] is not None


async def test_a_rule_condition_can_require_segment_membership(
    api: Api, shoppers: dict[str, str], sessionmaker: async_sessionmaker[AsyncSession]
):
    condition = {"field": "customer.total_spent", "op": "gte", "value": "10000"}
    vip = (await create(api, of_run(shoppers["run"], condition))).json()["id"]
    rule_condition = {"field": "customer.segments", "op": "contains", "value": vip}
    rule = RuleDefinition.model_validate(
        {
            "name": "VIP carts only",
            "trigger": {"event": "cart.abandoned", "after": "PT1H"},
            "conditions": rule_condition,
            "steps": [{"send": {"channels": ["email"], "template": "cart_reminder_1"}}],
        }
    )

    async with sessionmaker() as session:
        whale = await profiles.customer_context(session, shoppers["whale"])
        bargain = await profiles.customer_context(session, shoppers["bargain"])

    assert vip in whale["segments"]
    assert vip not in bargain["segments"]
    assert evaluate(rule.conditions, {"customer": whale}) is True
    assert evaluate(rule.conditions, {"customer": bargain}) is False


def test_segment_membership_is_a_list_read_with_contains():
    with pytest.raises(pydantic.ValidationError, match=r"customer\.segments is a list"):
        RuleDefinition.model_validate(
            {
                "name": "x",
                "trigger": {"event": "cart.abandoned"},
                "conditions": {"field": "customer.segments", "op": "gte", "value": "seg_1"},
                "steps": [{"send": {"channels": ["email"], "template": "cart_reminder_1"}}],
            }
        )


@pytest.mark.parametrize(
    ("conditions", "named"),
    [
        pytest.param(
            {"field": "customer.shoe_size", "op": "eq", "value": 1},
            "customer.shoe_size",
            id="unknown-field",
        ),
        pytest.param(
            {"field": "customer.total_spent", "op": "gte", "value": "lots"},
            "customer.total_spent",
            id="not-a-number",
        ),
        pytest.param(
            {"field": "cart.total", "op": "gte", "value": "1"},
            "cart.total",
            id="not-a-customer-field",
        ),
        pytest.param(
            {"all": [{"field": "customer.segments", "op": "contains", "value": "s"}]},
            "customer.segments",
            id="segment-of-segments",
        ),
    ],
)
async def test_bad_conditions_are_422_naming_the_field(api: Api, conditions: dict, named: str):
    response = await create(api, conditions)

    assert response.status_code == 422
    body = response.json()
    assert named in body["detail"]
    assert body["fields"][0]["loc"][:2] == ["body", "conditions"]


async def test_get_list_replace_and_404(api: Api):
    first = {"field": "customer.orders_count", "op": "gte", "value": 1}
    created = (await create(api, first)).json()

    fetched = await api.get(f"/v1/segments/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json()["conditions"] == first
    assert created["id"] in [s["id"] for s in (await api.get("/v1/segments")).json()]

    second = {"field": "customer.country", "op": "eq", "value": "PK"}
    replaced = await api.http.put(
        f"/v1/segments/{created['id']}",
        json={"name": "Pakistan", "conditions": second},
        headers=auth(ADMIN_KEY),
    )
    assert replaced.status_code == 200
    again = (await api.get(f"/v1/segments/{created['id']}")).json()
    assert (again["name"], again["conditions"]["field"]) == ("Pakistan", "customer.country")

    assert (await api.get("/v1/segments/seg_nope")).status_code == 404
    assert (await api.get("/v1/segments/seg_nope/customers")).status_code == 404
    missing = await api.http.put(
        "/v1/segments/seg_nope", json={"name": "x", "conditions": second}, headers=auth(ADMIN_KEY)
    )
    assert missing.status_code == 404
    bad_cursor = await api.get(f"/v1/segments/{created['id']}/customers?cursor=garbage")
    assert bad_cursor.status_code == 422


async def _key(api: Api, scopes: list[str]) -> str:
    response = await api.http.post(
        "/v1/api-keys", json={"name": "segments test", "scopes": scopes}, headers=auth(ADMIN_KEY)
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


async def test_reading_needs_rules_read_and_writing_rules_write(api: Api):
    condition = {"field": "customer.orders_count", "op": "gte", "value": 1}
    reader = await _key(api, ["rules:read"])
    backend = await _key(api, ["events:write"])
    writer = await _key(api, ["rules:write"])

    assert (await api.http.get("/v1/segments")).status_code == 401
    assert (await api.get("/v1/segments", key="sutra_not_a_key")).status_code == 401
    assert (await api.get("/v1/segments", key=backend)).status_code == 403
    assert (await create(api, condition, key=reader)).status_code == 403
    created = await create(api, condition, key=writer)
    assert created.status_code == 201
    segment_id = created.json()["id"]
    assert (await api.get(f"/v1/segments/{segment_id}", key=reader)).status_code == 200
    assert (await api.get(f"/v1/segments/{segment_id}/customers", key=reader)).status_code == 200
    assert (await api.get(f"/v1/segments/{segment_id}", key=backend)).status_code == 403
