"""PostgreSQL going away. Activities whose connections are dropped mid-flight retry and
succeed, and every message still goes out once; the API answers 503 (never 500) for what
needs the database while it is unreachable, and recovers by itself when it is back."""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

from sqlalchemy.engine import make_url
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from contracts.carts import CartState
from contracts.names import STATE_QUERY
from tests.conftest import ADMIN_KEY, Api, auth, make_settings, start_api
from tests.factories import cart_updated, eventually, uid
from tests.processes import (
    assert_each_text_sent_once,
    fast_cart_rule,
    ledger,
    phone_for,
    proxy_for,
    terminate_backends,
    through,
)
from tests.providers.fake_twilio import FakeTwilio
from worker import build_worker

SOAK = os.environ.get("SUTRA_SOAK") == "1"
CARTS = 30 if SOAK else 8
CUTS = 10 if SOAK else 4
LOAD_EVENTS = 600 if SOAK else 120
TEXTS_PER_CART = 3


async def _cart_done(client: Client, cart_id: str) -> CartState | None:
    state = await client.get_workflow_handle(f"cart/{cart_id}").query(
        STATE_QUERY, result_type=CartState
    )
    return state if state.journey_status == "ended" else None


async def test_activities_retry_through_dropped_connections_and_send_each_message_once(
    database_url: str,
    admin_url: str,
    dev_server: WorkflowEnvironment,
    task_queue: str,
    fake_twilio: FakeTwilio,
):
    settings = make_settings(
        database_url,
        dev_server.client.service_client.config.target_host,
        task_queue,
        twilio_account_sid=fake_twilio.account_sid,
        twilio_auth_token=fake_twilio.auth_token,
        twilio_api_base_url=fake_twilio.base_url,
        twilio_sms_from="+15005550006",
        frequency_cap="PT1S",
    )
    database = make_url(database_url).database
    assert database
    api, lifespan = await start_api(settings)
    prefix = uid("dbcut")
    rule_id = None
    try:
        # The worker has an engine of its own, as in production; its connections are dropped.
        from db.engine import create_engine, create_sessionmaker

        engine = create_engine(settings)
        created = await api.http.post(
            "/v1/rules", json=fast_cart_rule(prefix), headers=auth(ADMIN_KEY)
        )
        assert created.status_code == 201, created.text
        rule_id = created.json()["id"]
        activated = await api.http.post(f"/v1/rules/{rule_id}/activate", headers=auth(ADMIN_KEY))
        assert activated.status_code == 200, activated.text
        base = random.randrange(1_000_000, 8_000_000)
        carts = []
        async with build_worker(
            dev_server.client, task_queue, create_sessionmaker(engine), settings
        ):
            for n in range(CARTS):
                customer_id = f"{prefix}_{n}"
                event = cart_updated(customer_id=customer_id, phone=phone_for(base + n))
                assert (await api.post_event(event)).status_code == 202
                carts.append((customer_id, event["data"]["cart_id"], phone_for(base + n)))

            cuts: list[int] = []
            for _ in range(CUTS):
                await asyncio.sleep(1.5)  # journeys are mid-send or mid-wait
                cuts.append(await asyncio.to_thread(terminate_backends, admin_url, database))

            for _, cart_id, _ in carts:
                state = await eventually(
                    lambda c=cart_id: _cart_done(dev_server.client, c),  # type: ignore[misc]
                    within=60,
                    what=f"the journey of {cart_id} to finish",
                )
                assert state.journey is not None
                assert state.journey.exit_reason == "completed"
        await engine.dispose()

        assert sum(cuts) >= CUTS, f"connections dropped per cut: {cuts}"
        rows = await asyncio.to_thread(ledger, database_url, [c for c, _, _ in carts])
        assert_each_text_sent_once(rows, carts, fake_twilio, TEXTS_PER_CART)
        print(
            f"\n[db-outage activities] {CARTS} carts, {CUTS} cuts dropping {cuts} connections;"
            f" texts expected {CARTS * TEXTS_PER_CART}, sent {len(rows)},"
            f" at Twilio {len(fake_twilio.messages)}, duplicates 0"
        )
    finally:
        if rule_id is not None:
            await api.http.post(f"/v1/rules/{rule_id}/archive", headers=auth(ADMIN_KEY))
        await api.http.aclose()
        await lifespan.__aexit__(None, None, None)


# --- the API ------------------------------------------------------------------------------


async def _needs_the_database(api: Api, event: dict[str, Any], customer_id: str) -> list[Any]:
    return [
        await api.get("/v1/rules"),
        await api.post_event(event),
        await api.get(f"/v1/customers/{customer_id}"),
    ]


async def test_the_api_answers_503_while_the_database_is_unreachable_and_recovers_by_itself(
    database_url: str, dev_server: WorkflowEnvironment, task_queue: str
):
    proxy = proxy_for(database_url).start()
    api: Api | None = None
    lifespan: Any = None
    try:
        settings = make_settings(
            through(database_url, proxy),
            dev_server.client.service_client.config.target_host,
            task_queue,
            dispatcher_enabled=False,
        )
        api, lifespan = await start_api(settings)
        customer_id = uid("c")
        assert (await api.post_event(cart_updated(customer_id=customer_id))).status_code == 202
        refused = cart_updated(customer_id=customer_id)

        proxy.cut()  # every pooled connection dropped, new ones refused
        down = await _needs_the_database(api, refused, customer_id)
        healthz = await api.http.get("/healthz")
        readyz = await api.http.get("/readyz")

        assert [r.status_code for r in down] == [503, 503, 503], [r.text for r in down]
        for response in down:
            body = response.json()
            assert body["error"] == "database_unavailable"
            assert body["detail"]
            assert int(response.headers["Retry-After"]) > 0
        assert healthz.status_code == 200
        assert readyz.status_code == 503
        assert readyz.json()["checks"]["database"].startswith("unavailable")

        await asyncio.sleep(11)  # past the API-key cache: authentication needs the database too
        again = await api.get("/v1/rules")
        assert again.status_code == 503, again.text
        assert again.json()["error"] == "database_unavailable"

        proxy.restore()
        up = await _needs_the_database(api, refused, customer_id)

        # No restart: the pool throws away the dead connections and opens new ones.
        assert [r.status_code for r in up] == [200, 202, 200], [r.text for r in up]
        assert up[1].json()["status"] == "accepted"  # the refused event was never stored
        assert (await api.http.get("/readyz")).json()["checks"]["database"] == "ok"
    finally:
        if api is not None:
            await api.http.aclose()
            await lifespan.__aexit__(None, None, None)
        proxy.kill()


async def test_connections_dropped_under_load_give_503_or_success_never_500_and_lose_nothing(
    database_url: str, admin_url: str, dev_server: WorkflowEnvironment, task_queue: str
):
    """Every connection of the database terminated while events pour in: each request
    either succeeds or answers 503, and a client retrying its 503s loses no event."""
    database = make_url(database_url).database
    assert database
    settings = make_settings(
        database_url,
        dev_server.client.service_client.config.target_host,
        task_queue,
        dispatcher_enabled=False,
    )
    api, lifespan = await start_api(settings)
    try:
        events = [cart_updated() for _ in range(LOAD_EVENTS)]
        statuses: dict[str, int] = {}
        bodies: list[str] = []

        async def post(chunk: list[dict[str, Any]]) -> None:
            for event in chunk:
                response = await api.post_event(event)
                statuses[event["id"]] = response.status_code
                if response.status_code not in (202, 503):
                    bodies.append(response.text)
                elif response.status_code == 503:
                    assert response.json()["error"] == "database_unavailable"

        async def cut() -> None:
            for _ in range(CUTS):
                await asyncio.sleep(0.3)
                await asyncio.to_thread(terminate_backends, admin_url, database)

        await asyncio.gather(cut(), *(post(events[i::4]) for i in range(4)))

        assert bodies == [], bodies[:3]
        unavailable = [e for e in events if statuses[e["id"]] == 503]
        for event in unavailable:  # the client retries: stored once, whatever happened
            again = await api.post_event(event)
            assert again.status_code == 202, again.text
        for event in events:
            assert (await api.get(f"/v1/events/{event['id']}")).status_code == 200
        print(
            f"\n[db-outage api-load] {len(events)} events, {CUTS} cuts,"
            f" {len(unavailable)} answered 503 then retried, 0 answered 500, 0 lost"
        )
    finally:
        await api.http.aclose()
        await lifespan.__aexit__(None, None, None)
