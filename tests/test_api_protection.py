"""API protection: per-key rate limits (429 + Retry-After), security headers, the audit
log of changes, the body limit, and replayed provider webhooks changing nothing twice."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from db.models import ConsentChange, Event, InboundMessage
from services.platform import api_keys
from tests import test_orders_api, test_webhooks
from tests.conftest import ADMIN_KEY, Api, auth, make_settings, start_api
from tests.factories import cart_updated, eventually, uid
from tests.providers.fake_payments import FakeStripe
from tests.providers.fake_twilio import AUTH_TOKEN
from tests.providers.signing import twilio_headers
from tests.test_rules_api import _rule
from tests.test_templates_api import GOOD_EMAIL

# The webhook fixtures of that module, reused as they are (order_api is everyone's:
# tests/order_api.py).
hook_settings = test_webhooks.hook_settings
hooks = test_webhooks.hooks


@pytest.fixture
async def limited(
    database_url: str, dev_server: WorkflowEnvironment, task_queue: str
) -> AsyncIterator[Api]:
    """An API allowing 60 requests a minute per key, two at once."""
    settings = make_settings(
        database_url,
        dev_server.client.service_client.config.target_host,
        task_queue,
        rate_limit_per_minute=60,
        rate_limit_burst=2,
        dispatcher_enabled=False,
    )
    api, manager = await start_api(settings)
    yield api
    await api.http.aclose()
    await manager.__aexit__(None, None, None)


def _client(api: Api, ip: str) -> httpx.AsyncClient:
    """A client calling from its own address, so its per-IP bucket is its own."""
    transport = httpx.ASGITransport(app=api.app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://sutra")


async def _key(
    sessionmaker: async_sessionmaker[AsyncSession], scopes: list[str], name: str = "limited"
) -> str:
    async with sessionmaker() as session, session.begin():
        _, plaintext = await api_keys.create_key(session, name=name, scopes=scopes, created_by=None)
    return plaintext


async def _audit(api: Api, **params: str) -> list[dict[str, Any]]:
    response = await api.http.get("/v1/audit", params=params, headers=auth(ADMIN_KEY))
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


# Rate limits.


async def test_a_key_over_its_rate_gets_429_with_retry_after_and_recovers(
    limited: Api, sessionmaker: async_sessionmaker[AsyncSession]
):
    busy, calm = await _key(sessionmaker, ["rules:read"]), await _key(sessionmaker, ["rules:read"])
    async with _client(limited, "10.0.0.1") as a, _client(limited, "10.0.0.2") as b:
        # The first request of a key this process has not seen yet counts against the IP;
        # from then on the key has its own bucket: two at once, then one a second.
        statuses = [(await a.get("/v1/rules", headers=auth(busy))).status_code for _ in range(3)]
        refused = await a.get("/v1/rules", headers=auth(busy))
        other = [(await b.get("/v1/rules", headers=auth(calm))).status_code for _ in range(3)]

        assert statuses == [200, 200, 200]
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited"
        assert "detail" in refused.json()
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 2
        assert refused.headers["x-content-type-options"] == "nosniff"
        assert other == [200, 200, 200]  # another key is not affected

        await asyncio.sleep(retry_after + 0.1)
        assert (await a.get("/v1/rules", headers=auth(busy))).status_code == 200


async def test_unknown_keys_are_limited_by_client_ip_and_probes_and_webhooks_never(
    limited: Api, sessionmaker
):
    async with _client(limited, "10.0.1.1") as c:
        garbage = [
            (await c.get("/v1/rules", headers=auth(f"sutra_guess_{n}"))).status_code
            for n in range(3)
        ]
        probes = [(await c.get(p)).status_code for p in ["/healthz", "/metrics"] * 3]
        hooks = [(await c.post("/v1/webhooks/stripe", content=b"{}")).status_code for _ in range(3)]

    assert garbage == [401, 401, 429]  # changing the key each time does not dodge the limit
    assert probes == [200] * 6
    assert hooks == [401] * 3  # refused by their signature check, not rate limited


async def test_a_refused_request_does_not_consume_and_events_are_not_stored(
    limited: Api, sessionmaker: async_sessionmaker[AsyncSession]
):
    key = await _key(sessionmaker, ["events:write"])
    async with _client(limited, "10.0.2.1") as c:
        for _ in range(3):
            assert (await c.post("/v1/events", json=cart_updated(), headers=auth(key))).is_success
        event = cart_updated()
        refused = await c.post("/v1/events", json=event, headers=auth(key))

    assert refused.status_code == 429
    async with sessionmaker() as session:
        assert await session.get(Event, event["id"]) is None


# Security headers.

_ALWAYS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


async def test_security_headers_on_answers_and_errors(api: Api):
    big = b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    responses = {
        "ok": await api.get("/v1/api-keys"),
        "unauthorized": await api.http.get("/v1/api-keys"),
        "not_found": await api.get("/v1/nowhere"),
        "validation": await api.http.post("/v1/api-keys", json={}, headers=auth(ADMIN_KEY)),
        "too_large": await api.http.post("/v1/events", content=big, headers=auth(ADMIN_KEY)),
    }

    assert {k: r.status_code for k, r in responses.items()} == {
        "ok": 200,
        "unauthorized": 401,
        "not_found": 404,
        "validation": 422,
        "too_large": 413,
    }
    for name, response in responses.items():
        for header, value in _ALWAYS.items():
            assert response.headers.get(header) == value, (name, header)
        assert response.headers["cache-control"] == "no-store", name
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp, name
        assert "default-src 'self'" in csp, name
        assert "strict-transport-security" not in response.headers  # http public URL
    assert responses["too_large"].json()["error"] == "payload_too_large"


async def test_docs_keep_working_with_their_cdn_allowed(api: Api):
    docs = await api.http.get("/docs")

    assert docs.status_code == 200
    assert "cdn.jsdelivr.net" in docs.text
    csp = docs.headers["content-security-policy"]
    assert "https://cdn.jsdelivr.net" in csp
    assert "frame-ancestors 'none'" in csp
    assert docs.headers["x-frame-options"] == "DENY"
    assert (await api.http.get("/openapi.json")).status_code == 200


async def test_hsts_when_the_public_url_is_https(hooks: Api):
    response = await hooks.http.get("/healthz")

    assert response.headers["strict-transport-security"].startswith("max-age=")


# Body limit.


async def test_a_body_over_the_limit_is_413_before_anything_is_stored(api: Api, sessionmaker):
    event = cart_updated()
    event["pad"] = "x" * (1024 * 1024)

    response = await api.post_event(event)

    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    async with sessionmaker() as session:
        assert await session.get(Event, event["id"]) is None


# Audit log.


async def test_rule_changes_are_in_the_audit_log_with_who_and_what(api: Api):
    created = await api.http.post("/v1/rules", json=_rule(), headers=auth(ADMIN_KEY))
    assert created.status_code == 201, created.text
    rule_id = created.json()["id"]
    activated = await api.http.post(f"/v1/rules/{rule_id}/activate", headers=auth(ADMIN_KEY))
    again = await api.http.post(f"/v1/rules/{rule_id}/activate", headers=auth(ADMIN_KEY))
    assert activated.status_code == again.status_code == 200

    archived = await api.http.post(f"/v1/rules/{rule_id}/archive", headers=auth(ADMIN_KEY))
    assert archived.status_code == 200

    entries = await _audit(api, entity="rule", entity_id=rule_id)

    # Newest first; the retried activation changed nothing and is not there.
    assert [e["action"] for e in entries] == ["archived", "active", "created"]
    assert {e["actor"] for e in entries} == {"bootstrap admin"}
    assert all(e["actor_key_id"] for e in entries)
    assert entries[-1]["details"]["version"] == 1


async def test_template_put_and_delete_are_audited(api: Api):
    name = "cart_reminder_1"
    body = {"channels": {"email": {"en": GOOD_EMAIL}}}
    refused = await api.http.put(
        f"/v1/templates/{name}",
        json={**body, "channels": {"email": {"en": {**GOOD_EMAIL, "text": "{{ nope }"}}}},
        headers=auth(ADMIN_KEY),
    )
    stored = await api.http.put(f"/v1/templates/{name}", json=body, headers=auth(ADMIN_KEY))
    dropped = await api.http.delete(f"/v1/templates/{name}", headers=auth(ADMIN_KEY))

    assert (refused.status_code, stored.status_code) == (422, 200), stored.text
    assert dropped.status_code == 200
    entries = (await _audit(api, entity="template", entity_id=name))[:2]
    assert [e["action"] for e in entries] == ["delete", "put"]  # the refused put is not there
    assert entries[1]["details"] == {"kind": "marketing", "channels": ["email/en"]}


async def test_key_create_and_revoke_are_audited_once(api: Api):
    created = await api.http.post(
        "/v1/api-keys", json={"name": "audited", "scopes": ["ops"]}, headers=auth(ADMIN_KEY)
    )
    key_id = created.json()["id"]
    for _ in range(2):  # revoking twice changes something once
        revoked = await api.http.delete(f"/v1/api-keys/{key_id}", headers=auth(ADMIN_KEY))
        assert revoked.status_code == 200

    entries = await _audit(api, entity="api_key", entity_id=key_id)

    assert [e["action"] for e in entries] == ["revoke", "create"]
    assert entries[1]["details"] == {"name": "audited", "scopes": ["ops"]}
    assert created.json()["key"] not in json.dumps(entries)  # the secret is never logged


async def test_the_audit_log_pages_newest_first_and_needs_admin(
    api: Api, sessionmaker: async_sessionmaker[AsyncSession]
):
    names = [uid("pg") for _ in range(5)]
    for name in names:
        response = await api.http.post(
            "/v1/api-keys", json={"name": name, "scopes": ["ops"]}, headers=auth(ADMIN_KEY)
        )
        assert response.status_code == 201
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"entity": "api_key", "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await api.http.get("/v1/audit", params=params, headers=auth(ADMIN_KEY))).json()
        seen += [e["details"]["name"] for e in page["entries"] if e["action"] == "create"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    ours = [n for n in seen if n in names]

    assert ours == list(reversed(names))
    ops = await _key(sessionmaker, ["ops", "rules:write"])
    assert (await api.http.get("/v1/audit", headers=auth(ops))).status_code == 403
    bad = await api.http.get("/v1/audit", params={"cursor": "nope"}, headers=auth(ADMIN_KEY))
    assert (bad.status_code, bad.json()["error"]) == (400, "bad_request")


async def test_order_transitions_are_audited_and_refused_ones_are_not(order_api: Api):
    api = order_api
    order_id = await test_orders_api._place(api, "INR", "1000.00")
    await test_orders_api._order(api, order_id, status="awaiting_payment")

    refused = await api.http.post(
        f"/v1/orders/{order_id}/transitions", json={"to": "delivered"}, headers=auth(ADMIN_KEY)
    )
    assert refused.status_code == 409
    assert await _audit(api, entity="order", entity_id=order_id) == []

    moved = await api.http.post(
        f"/v1/orders/{order_id}/transitions",
        json={"to": "cancelled", "reason": "customer asked"},
        headers=auth(ADMIN_KEY),
    )
    assert moved.status_code == 200, moved.text

    [entry] = await _audit(api, entity="order", entity_id=order_id)
    assert entry["action"] == "transition"
    assert entry["actor"] == "bootstrap admin"
    assert entry["details"] == {
        "from": "awaiting_payment",
        "status": "cancelled",
        "to": "cancelled",
        "reason": "customer asked",
    }


# Replayed webhooks.


async def test_a_replayed_stripe_event_is_acknowledged_once(
    order_api: Api, fake_stripe: FakeStripe
):
    api = order_api
    order_id = await test_orders_api._place(api, "USD", "80.00")
    await eventually(lambda: test_orders_api._async(fake_stripe.sessions), what="the session")
    [checkout] = fake_stripe.sessions.values()
    payload = json.dumps(fake_stripe.pay(checkout["id"])).encode()

    async def post() -> httpx.Response:
        header = test_orders_api._stripe_header(payload, int(time.time()))
        return await api.http.post(
            "/v1/webhooks/stripe", content=payload, headers={"Stripe-Signature": header}
        )

    first, again = await post(), await post()

    assert (first.status_code, first.json()) == (200, {"status": "accepted"})
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    await test_orders_api._order(api, order_id, status="confirmed", paid_amount="12.00")


async def test_a_replayed_twilio_inbound_stop_is_taken_once(
    hooks: Api, sessionmaker: async_sessionmaker[AsyncSession]
):
    """Twilio signs no timestamp, so no replay window applies: the MessageSid is unique in
    inbound_messages (and "sid:status" in message_events), so a replay changes nothing."""
    phone = "+923001239" + str(uuid.uuid4().int % 1000).zfill(3)
    customer_id = uid("c")
    assert (await hooks.post_event(cart_updated(customer_id=customer_id, phone=phone))).is_success
    params = {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "From": phone,
        "To": "+15005550006",
        "Body": "STOP",
    }
    url = f"{test_webhooks.PUBLIC_URL}/v1/webhooks/twilio/inbound"
    headers = twilio_headers(AUTH_TOKEN, url, params)

    for _ in range(2):
        response = await hooks.http.post(
            "/v1/webhooks/twilio/inbound", content=urlencode(params), headers=headers
        )
        assert response.status_code == 200

    async with sessionmaker() as session:
        inbound = await session.scalar(
            select(func.count())
            .select_from(InboundMessage)
            .where(InboundMessage.provider_message_id == params["MessageSid"])
        )
        stops = await session.scalar(
            select(func.count())
            .select_from(ConsentChange)
            .where(ConsentChange.customer_id == customer_id, ConsentChange.source == "stop_keyword")
        )
    assert (inbound, stops) == (1, 1)


# Secrets.


async def test_a_key_differing_in_one_character_is_refused(
    api: Api, sessionmaker: async_sessionmaker[AsyncSession]
):
    """Keys are looked up by their SHA-256 hash: the comparison the database makes is of
    hashes, so its timing says nothing about the key's characters."""
    key = await _key(sessionmaker, ["rules:read"])
    near = key[:-1] + ("A" if key[-1] != "A" else "B")

    assert (await api.http.get("/v1/rules", headers=auth(key))).status_code == 200
    assert (await api.http.get("/v1/rules", headers=auth(near))).status_code == 401
