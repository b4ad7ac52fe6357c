"""Orders over the API on the dev server: a partial-COD order paid through a verified
Razorpay or Stripe webhook, moved by ops; forged and replayed webhooks change nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from tests.conftest import ADMIN_KEY, Api, auth, start_api
from tests.factories import customer, eventually, item, now_iso, uid
from tests.order_api import order_api_settings
from tests.providers.fake_payments import (
    RAZORPAY_WEBHOOK_SECRET,
    STRIPE_WEBHOOK_SECRET,
    FakeRazorpay,
    FakeStripe,
)
from worker import build_worker


async def _place(api: Api, currency: str, total: str) -> str:
    order_id = uid("ord")
    response = await api.post_event(
        {
            "id": uid("evt"),
            "type": "order.placed",
            "occurred_at": now_iso(),
            "customer": customer(uid("c")),
            "data": {
                "order_id": order_id,
                "items": [item(unit_price=total)],
                "total": total,
                "currency": currency,
                "payment_type": "partial_cod",
            },
        }
    )
    assert response.status_code == 202
    return order_id


async def _order(api: Api, order_id: str, **expected: Any) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        response = await api.get(f"/v1/orders/{order_id}")
        body: dict[str, Any] = response.json()
        ok = response.status_code == 200 and all(body.get(k) == v for k, v in expected.items())
        return body if ok else None

    return await eventually(probe, within=20, what=f"order {order_id} with {expected}")


async def _async(value: Any) -> Any:
    return value


def _razorpay_signature(body: bytes, secret: str = RAZORPAY_WEBHOOK_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_a_partial_cod_order_paid_by_razorpay_webhook_and_moved_by_ops(
    order_api: Api, fake_razorpay: FakeRazorpay
):
    api = order_api
    order_id = await _place(api, "INR", "1000.00")
    await eventually(lambda: _async(fake_razorpay.links), what="the payment link")
    [link] = fake_razorpay.links.values()
    order = await _order(api, order_id, payment_link=link["short_url"])
    assert order["status"] == "awaiting_payment"
    assert (order["upfront_amount"], order["remaining_amount"]) == ("150.00", "850.00")

    body, event_id = fake_razorpay.pay(link["id"])
    headers = {"X-Razorpay-Event-Id": event_id, "Content-Type": "application/json"}
    forged = await api.http.post(
        "/v1/webhooks/razorpay",
        content=body,
        headers={**headers, "X-Razorpay-Signature": _razorpay_signature(body, "guess")},
    )
    stale_body, _ = fake_razorpay.pay(link["id"], created_at=int(time.time()) - 3 * 86400)
    replayed = await api.http.post(
        "/v1/webhooks/razorpay",
        content=stale_body,
        headers={**headers, "X-Razorpay-Signature": _razorpay_signature(stale_body)},
    )
    unsigned = await api.http.post("/v1/webhooks/razorpay", content=body, headers=headers)

    assert [forged.status_code, replayed.status_code, unsigned.status_code] == [401, 401, 401]
    assert (await api.get(f"/v1/orders/{order_id}")).json()["status"] == "awaiting_payment"

    signed = {**headers, "X-Razorpay-Signature": _razorpay_signature(body)}
    first = await api.http.post("/v1/webhooks/razorpay", content=body, headers=signed)
    again = await api.http.post("/v1/webhooks/razorpay", content=body, headers=signed)

    assert (first.status_code, first.json()) == (200, {"status": "accepted"})
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    order = await _order(api, order_id, status="confirmed")
    assert (order["payment_status"], order["paid_amount"]) == ("partially_paid", "150.00")

    early = await api.http.post(
        f"/v1/orders/{order_id}/transitions", json={"to": "delivered"}, headers=auth(ADMIN_KEY)
    )
    assert early.status_code == 409
    assert early.json()["current_status"] == "confirmed"
    for to in ("shipped", "delivered"):
        moved = await api.http.post(
            f"/v1/orders/{order_id}/transitions",
            json={"to": to, "tracking_url": "https://track.example/t1"},
            headers=auth(ADMIN_KEY),
        )
        assert moved.status_code == 200, moved.text
    assert moved.json()["payment_status"] == "fully_paid"
    # Delivered by hand is taken in as the shop's order.delivered would be: post-purchase
    # journeys and replenishment clocks start from it.
    stored = await api.get(f"/v1/events/ops:{order_id}:delivered")
    assert stored.status_code == 200, stored.text
    assert (stored.json()["type"], stored.json()["payload"]["data"]) == (
        "order.delivered",
        {"order_id": order_id},
    )
    late = await api.http.post(
        f"/v1/orders/{order_id}/transitions", json={"to": "cancelled"}, headers=auth(ADMIN_KEY)
    )
    assert late.status_code == 409
    assert late.json()["current_status"] == "delivered"
    bad = await api.http.post(
        f"/v1/orders/{order_id}/transitions", json={"to": "teleported"}, headers=auth(ADMIN_KEY)
    )
    assert bad.status_code == 422


def _stripe_header(payload: bytes, at: int, secret: str = STRIPE_WEBHOOK_SECRET) -> str:
    digest = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


async def test_a_stripe_paid_checkout_confirms_the_order_and_forgeries_do_not(
    order_api: Api, fake_stripe: FakeStripe
):
    api = order_api
    order_id = await _place(api, "USD", "80.00")
    await eventually(lambda: _async(fake_stripe.sessions), what="the checkout session")
    [session] = fake_stripe.sessions.values()
    await _order(api, order_id, payment_link=session["url"])
    event = fake_stripe.pay(session["id"])
    payload = json.dumps(event).encode()
    now = int(time.time())

    async def post(signature: str) -> int:
        response = await api.http.post(
            "/v1/webhooks/stripe", content=payload, headers={"Stripe-Signature": signature}
        )
        return response.status_code

    assert await post(_stripe_header(payload, now, "whsec_wrong")) == 401
    assert await post(_stripe_header(payload, now - 3600)) == 401  # replayed an hour later
    assert (await api.get(f"/v1/orders/{order_id}")).json()["status"] == "awaiting_payment"

    assert await post(_stripe_header(payload, now)) == 200
    order = await _order(api, order_id, status="confirmed")
    assert (order["payment_status"], order["paid_amount"]) == ("partially_paid", "12.00")


async def test_orders_need_the_ops_scope_and_unknown_orders_are_404(order_api: Api):
    created = await order_api.http.post(
        "/v1/api-keys",
        json={"name": "events only", "scopes": ["events:write"]},
        headers=auth(ADMIN_KEY),
    )
    key = created.json()["key"]

    assert (await order_api.get("/v1/orders/nope", key=key)).status_code == 403
    assert (await order_api.get(f"/v1/orders/{uid('ord')}")).status_code == 404


async def test_a_move_no_worker_answers_in_time_is_a_503_and_takes_effect_once_one_runs(
    database_url: str,
    dev_server: WorkflowEnvironment,
    task_queue: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_razorpay: FakeRazorpay,
    fake_stripe: FakeStripe,
):
    settings = order_api_settings(
        database_url,
        dev_server,
        task_queue,
        fake_razorpay,
        fake_stripe,
        order_update_timeout=timedelta(seconds=2),
    )
    api, manager = await start_api(settings)
    try:
        async with build_worker(dev_server.client, task_queue, sessionmaker, settings):
            order_id = await _place(api, "INR", "1000.00")
            await _order(api, order_id, status="awaiting_payment")
        # The order workers are down (a deploy, a crash): ops move the order meanwhile.
        moved = await api.http.post(
            f"/v1/orders/{order_id}/transitions", json={"to": "cancelled"}, headers=auth(ADMIN_KEY)
        )
        assert moved.status_code == 503, moved.text
        assert moved.json()["error"] == "service_unavailable"
        assert "takes effect when they run" in moved.json()["detail"]
        assert moved.headers["Retry-After"] == "2"
        # The move is in the order's history: once workers run it takes effect, with no
        # retry, and a retry made anyway is refused on the cancelled order.
        async with build_worker(dev_server.client, task_queue, sessionmaker, settings):
            order = await _order(api, order_id, status="cancelled")
            again = await api.http.post(
                f"/v1/orders/{order_id}/transitions",
                json={"to": "cancelled"},
                headers=auth(ADMIN_KEY),
            )
        assert (again.status_code, again.json()["current_status"]) == (409, "cancelled")
        assert [h["status"] for h in order["history"]].count("cancelled") == 1
    finally:
        await api.http.aclose()
        await manager.__aexit__(None, None, None)
