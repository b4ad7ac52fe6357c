"""Whose clock an event's occurred_at counts on (README "Events", issue 11).

Over the API (dev server): an event further ahead of Sutra's clock than
SUTRA_EVENT_MAX_FUTURE_SKEW is refused naming the field and the lead, and nothing is
stored; a smaller lead is accepted and counts from arrival; an event that arrives more than
SUTRA_EVENT_LATE_AFTER after it happened is kept as a fact but starts no journey.

On the time-skipping server: a cart stamped ahead is abandoned one idle period after its
real last activity, with its real contents; a late cart event starts no cart at all; an
order's payment deadline counts from when Sutra accepted it, however it was stamped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from config.settings import Environment, Settings
from contracts import workflow_ids
from contracts.carts import CartState, CartStatus
from contracts.names import STATE_QUERY
from tests.conftest import ADMIN_KEY, Api, auth, start_api
from tests.factories import cart_updated, customer, eventually, item, uid
from tests.order_shop import OrderShop, ShopEndpoint, order_settings
from tests.providers.fake_payments import FakeRazorpay, FakeStripe
from tests.skipping_shop import SkippingShop
from worker import build_worker

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _from_now(delta: timedelta) -> str:
    return _iso(datetime.now(UTC) + delta)


def _customer_updated(customer_id: str, occurred_at: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": uid("evt"),
        "type": "customer.updated",
        "occurred_at": occurred_at,
        "customer": customer(customer_id, **fields),
    }


# --- over the API ---------------------------------------------------------------------


async def test_an_event_two_hours_ahead_is_refused_saying_by_how_much_and_not_stored(api: Api):
    ahead = _customer_updated(uid("c"), _from_now(2 * HOUR))

    response = await api.post_event(ahead)

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error"
    [field] = body["fields"]
    assert field["loc"] == ["occurred_at"]
    assert "1 h 59 min" in field["msg"]
    assert "ahead of Sutra's clock" in field["msg"]
    assert "SUTRA_EVENT_MAX_FUTURE_SKEW" in field["msg"]
    assert body["detail"].startswith("occurred_at: ")
    assert (await api.get(f"/v1/events/{ahead['id']}")).status_code == 404

    # In a batch only that event is refused, named by its place; the others are stored.
    before, after = cart_updated(), cart_updated()
    batch = await api.post_batch([before, ahead, after])
    assert batch.status_code == 207
    results = batch.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "accepted"]
    assert results[1]["error"]["fields"][0]["loc"] == ["events", 1, "occurred_at"]
    assert (await api.get(f"/v1/events/{ahead['id']}")).status_code == 404
    assert (await api.get(f"/v1/events/{after['id']}")).status_code == 200


async def test_the_future_bound_is_a_setting(settings: Settings):
    wider = settings.model_copy(update={"event_max_future_skew": 3 * HOUR})
    api, lifespan = await start_api(wider)
    try:
        response = await api.post_event(_customer_updated(uid("c"), _from_now(2 * HOUR)))
        assert response.status_code == 202, response.text
    finally:
        await api.http.aclose()
        await lifespan.__aexit__(None, None, None)


async def test_a_few_minutes_ahead_is_accepted_and_counts_from_arrival(api: Api):
    customer_id = uid("c")
    sent_at = datetime.now(UTC) + 10 * MINUTE
    skewed = _customer_updated(customer_id, _iso(sent_at), name="From a fast clock")

    assert (await api.post_event(skewed)).status_code == 202

    stored = (await api.get(f"/v1/events/{skewed['id']}")).json()
    occurred, received = (datetime.fromisoformat(stored[k]) for k in ("occurred_at", "received_at"))
    assert occurred == received  # as if it happened when it arrived
    assert datetime.fromisoformat(stored["payload"]["occurred_at"]) == sent_at  # kept as sent
    # A correction sent a moment later from a correct clock wins: taken at its word, the
    # fast clock's update would have outranked every update for the next ten minutes.
    corrected = _customer_updated(customer_id, _from_now(timedelta(0)), name="Corrected")
    assert (await api.post_event(corrected)).status_code == 202
    profile = (await api.get(f"/v1/customers/{customer_id}")).json()
    assert profile["name"] == "Corrected"


async def _routes(api: Api, event_id: str) -> list[dict[str, Any]] | None:
    routes = (await api.get(f"/v1/events/{event_id}")).json()["routes"]
    return routes if all(r["status"] != "pending" for r in routes) else None


async def test_a_late_event_is_kept_as_a_fact_but_starts_no_journey(
    api: Api, temporal: Client, worker
):
    late_id, fresh_id = uid("c"), uid("c")
    created = await api.http.post(
        "/v1/rules",
        json={
            "name": "Welcome (late events)",
            "trigger": {"event": "customer.created"},
            "conditions": {"field": "customer.id", "op": "in", "value": [late_id, fresh_id]},
            "quiet_hours": None,
            "steps": [{"wait": "P1D"}, {"send": {"channels": ["email"], "template": "welcome"}}],
        },
        headers=auth(ADMIN_KEY),
    )
    rule_id = created.json()["id"]
    await api.http.post(f"/v1/rules/{rule_id}/activate", headers=auth(ADMIN_KEY))
    try:
        three_days_ago = datetime.now(UTC) - timedelta(days=3)
        late: dict[str, Any] = {
            "id": uid("evt"),
            "type": "customer.created",
            "occurred_at": _iso(three_days_ago),
            "customer": customer(late_id),
        }
        fresh: dict[str, Any] = {**late, "id": uid("evt"), "occurred_at": _from_now(timedelta(0))}
        fresh["customer"] = customer(fresh_id)
        late_cart = cart_updated(customer_id=late_id, occurred_at=_iso(three_days_ago))
        for event in (late, fresh, late_cart):
            assert (await api.post_event(event)).status_code == 202

        fresh_routes = await eventually(lambda: _routes(api, fresh["id"]), what="fresh routes")
        assert workflow_ids.journey(rule_id, fresh_id) in {r["workflow_id"] for r in fresh_routes}
        assert (await api.get(f"/v1/events/{late['id']}")).json()["routes"] == []
        # The late cart event may inform a running cart, but starts none.
        [cart_route] = await eventually(lambda: _routes(api, late_cart["id"]), what="cart")
        assert (cart_route["kind"], cart_route["status"]) == ("signal", "skipped")
        cart_id = late_cart["data"]["cart_id"]
        with pytest.raises(RPCError) as missing:
            await temporal.get_workflow_handle(f"cart/{cart_id}").describe()
        assert missing.value.status == RPCStatusCode.NOT_FOUND
        # The facts are kept, at their own time.
        profile = (await api.get(f"/v1/customers/{late_id}")).json()
        assert datetime.fromisoformat(profile["first_seen_at"]) == three_days_ago
    finally:
        await api.http.post(f"/v1/rules/{rule_id}/archive", headers=auth(ADMIN_KEY))


# --- on the time-skipping server ------------------------------------------------------


@pytest.fixture
async def carts(
    time_skipping: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[SkippingShop]:
    settings = Settings(
        env=Environment.test, database_url=database_url, temporal_task_queue=task_queue
    )
    shop = SkippingShop(time_skipping, settings, sessionmaker)
    async with build_worker(time_skipping.client, task_queue, sessionmaker, settings):
        yield shop
    await shop.terminate_all()


async def _cart(shop: SkippingShop, cart_id: str) -> CartState:
    handle = shop.env.client.get_workflow_handle(f"cart/{cart_id}")
    return await handle.query(STATE_QUERY, result_type=CartState)


async def test_a_cart_stamped_ahead_is_abandoned_an_idle_hour_after_its_real_activity(
    carts: SkippingShop,
):
    cart_id, customer_id = uid("cart"), uid("c")
    start = await carts.now()
    # A backend clock 20 minutes fast, then the same cart from a correct one.
    await carts.send(
        cart_updated(
            cart_id,
            customer_id=customer_id,
            occurred_at=_iso(start + 20 * MINUTE),
            items=[item("FAST-CLOCK")],
        )
    )
    await carts.env.sleep(5 * MINUTE)
    later = await carts.now()
    await carts.send(
        cart_updated(
            cart_id, customer_id=customer_id, occurred_at=_iso(later), items=[item("REAL")]
        )
    )

    await carts.env.sleep(later + HOUR - MINUTE - await carts.now())
    assert (await _cart(carts, cart_id)).status == CartStatus.active
    await carts.env.sleep(2 * MINUTE)

    state = await _cart(carts, cart_id)
    assert state.status == CartStatus.abandoned
    assert state.abandoned_at is not None
    assert abs(state.abandoned_at - (later + HOUR)) < timedelta(seconds=5)
    # The correct clock's snapshot is the newest, not the one stamped 20 minutes ahead.
    assert state.snapshot is not None
    assert [i.sku for i in state.snapshot.items] == ["REAL"]


async def test_a_cart_event_that_arrives_days_late_starts_no_cart(carts: SkippingShop):
    cart_id = uid("cart")
    weeks_ago = await carts.now() - timedelta(days=20)
    late = cart_updated(cart_id, customer_id=uid("c"), occurred_at=_iso(weeks_ago))

    assert await carts.send(late) == "accepted"
    await carts.env.sleep(2 * HOUR)

    with pytest.raises(RPCError) as missing:
        await carts.env.client.get_workflow_handle(f"cart/{cart_id}").describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND


@pytest.fixture
async def orders(
    time_skipping: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_razorpay: FakeRazorpay,
    fake_stripe: FakeStripe,
    shop_endpoint: ShopEndpoint,
) -> AsyncIterator[OrderShop]:
    settings = order_settings(database_url, task_queue, fake_razorpay, fake_stripe, shop_endpoint)
    shop = OrderShop(time_skipping, settings, sessionmaker)
    async with build_worker(time_skipping.client, task_queue, sessionmaker, settings):
        yield shop
    await shop.terminate_all()


async def _partial_cod(shop: OrderShop, occurred_at: datetime) -> tuple[str, datetime]:
    order_id, customer_id = uid("ord"), uid("c")
    accepted = await shop.now()
    await shop.send(
        {
            "id": uid("evt"),
            "type": "order.placed",
            "occurred_at": _iso(occurred_at),
            "customer": customer(customer_id, email=f"{customer_id}@example.com"),
            "data": {
                "order_id": order_id,
                "items": [item(unit_price="1000.00")],
                "total": "1000.00",
                "currency": "INR",
                "payment_type": "partial_cod",
            },
        }
    )
    await shop.settle()
    return order_id, accepted


@pytest.mark.parametrize(
    "stamped", [10 * MINUTE, -timedelta(days=2)], ids=["10-minutes-ahead", "2-days-late"]
)
async def test_a_partial_cod_deadline_counts_from_acceptance_however_it_was_stamped(
    orders: OrderShop, fake_razorpay: FakeRazorpay, stamped: timedelta
):
    order_id, accepted = await _partial_cod(orders, await orders.now() + stamped)

    state = await orders.state(order_id)
    assert state.status == "awaiting_payment"  # not cancelled on arrival, 2 days "overdue"
    assert state.pay_by is not None
    assert abs(state.pay_by - (accepted + 24 * HOUR)) < timedelta(seconds=5)
    [create] = fake_razorpay.calls_to("POST", "/v1/payment_links")
    assert create.body["expire_by"] == int(state.pay_by.timestamp())
    # The first reminder comes 15 minutes after the request, not at once.
    await orders.env.sleep(10 * MINUTE)
    assert await orders.templates(order_id) == ["cod_payment_request"]
    await orders.env.sleep(24 * HOUR - 5 * MINUTE)
    assert (await orders.state(order_id)).status == "cancelled"
