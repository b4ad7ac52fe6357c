"""Crash safety: the worker and the API, each a real process, SIGKILLed at random moments
of running journeys (mid-wait, mid-send, mid-payment-link creation) and started again.

Load: abandoned carts (three texts, second-long waits), welcome series (two emails) and
partial-COD orders (a Razorpay payment link, paid by a signed webhook, then cancelled and
refunded or shipped and delivered). Providers are the repository's fakes, reached through
the real SDKs; their own callbacks (SendGrid "processed", Twilio "delivered") are posted
back to the API as the real providers would. Afterwards: every journey and order finished,
every ledger row was sent exactly once and reached the provider exactly once, one payment
link per order and purpose, no refund twice.

Kills are drawn from a seeded random generator (``SUTRA_CHAOS_SEED``, printed);
``SUTRA_SOAK=1`` runs a bigger load with more kills (``make soak``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import random
import shutil
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from contracts import workflow_ids
from contracts.carts import CartState
from contracts.lifecycle import LifecycleState
from contracts.names import STATE_QUERY
from tests.conftest import ADMIN_KEY, auth
from tests.factories import cart_updated, customer, eventually, item, now_iso, uid
from tests.processes import (
    ApiProcess,
    WorkerProcess,
    fast_cart_rule,
    fast_welcome_rule,
    ledger,
    phone_for,
    processes,
    sutra_env,
)
from tests.providers.fake_payments import (
    RAZORPAY_KEY_ID,
    RAZORPAY_KEY_SECRET,
    RAZORPAY_WEBHOOK_SECRET,
    FakeRazorpay,
)
from tests.providers.fake_sendgrid import FakeSendGrid
from tests.providers.fake_twilio import FakeTwilio
from tests.providers.signing import SendGridSigner, twilio_headers
from workflows import registry

SOAK = os.environ.get("SUTRA_SOAK") == "1"
SEED = int(os.environ.get("SUTRA_CHAOS_SEED", "7"))
CARTS, WELCOMES, ORDERS = (100, 40, 20) if SOAK else (12, 6, 4)
WORKER_KILLS, API_KILLS = (10, 3) if SOAK else (3, 1)
SIGNER = SendGridSigner()
# What each journey sends, by template, when it runs to its end.
CART_TEXTS = Counter({"cart_reminder_1": 2, "cart_reminder_2": 1})
WELCOME_EMAILS = Counter({"welcome": 2})
CANCELLED_ORDER = Counter({"cod_payment_request": 1, "order_confirmation": 1, "order_cancelled": 1})
DELIVERED_ORDER = Counter(
    {"cod_payment_request": 1, "order_confirmation": 1, "order_shipped": 1, "order_delivered": 1}
)


class Sutra:
    """The API process seen from outside: every call retried while it is down (killed,
    restarting), as a shop's backend or a provider's webhook sender would."""

    def __init__(self, api: ApiProcess) -> None:
        self.api = api
        self.http = httpx.AsyncClient(base_url=api.url, timeout=10)
        self.retries = 0

    async def call(
        self,
        method: str,
        path: str,
        *,
        ok: Callable[[httpx.Response], bool] = lambda r: r.status_code < 300,
        within: float = 120,
        poll: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        kwargs.setdefault("headers", auth(ADMIN_KEY))
        deadline = time.monotonic() + within
        while True:
            try:
                response = await self.http.request(method, path, **kwargs)
                if ok(response):
                    return response
                if not poll and response.status_code < 500 and response.status_code != 409:
                    raise AssertionError(f"{method} {path}: {response.status_code} {response.text}")
                last = f"{response.status_code} {response.text}"
            except httpx.TransportError as exc:
                last = repr(exc)
            self.retries += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"{method} {path} kept failing: {last}")
            await asyncio.sleep(0.3)

    async def post_event(self, event: dict[str, Any]) -> None:
        response = await self.call("POST", "/v1/events", json=event)
        assert response.json()["status"] in ("accepted", "duplicate"), response.text


async def _forward_provider_callbacks(
    sutra: Sutra, sendgrid: FakeSendGrid, twilio: FakeTwilio, stop: asyncio.Event
) -> None:
    """What SendGrid and Twilio do by themselves: report each message they took."""
    told: set[str] = set()
    while not stop.is_set():
        for mail in list(sendgrid.requests):
            if mail.message_id in told:
                continue
            custom = mail.json["personalizations"][0].get("custom_args", {})
            body = json.dumps(
                [
                    {
                        "email": mail.to[0],
                        "timestamp": int(time.time()),
                        "event": "processed",
                        "sg_event_id": uuid.uuid4().hex,
                        "sg_message_id": f"{mail.message_id}.filter0001",
                        "sutra_message_id": custom.get("sutra_message_id"),
                    }
                ]
            ).encode()
            await _report(
                sutra, "/v1/webhooks/sendgrid", content=body, headers=SIGNER.headers(body)
            )
            told.add(mail.message_id)
        for text in list(twilio.messages):
            if text.sid in told or not text.status_callback:
                continue
            params = {
                "MessageSid": text.sid,
                "MessageStatus": "delivered",
                "AccountSid": twilio.account_sid,
                "To": text.to,
            }
            path = text.status_callback.removeprefix(sutra.api.url)
            headers = twilio_headers(twilio.auth_token, text.status_callback, params)
            await _report(sutra, path, content=urlencode(params), headers=headers)
            told.add(text.sid)
        await asyncio.sleep(0.3)


async def _report(sutra: Sutra, path: str, **kwargs: Any) -> None:
    try:
        await sutra.call("POST", path, **kwargs)
    except AssertionError as exc:  # keep reporting the others; the checks will tell
        print(f"[crash-safety] callback refused: {exc}", flush=True)


def _in_flight(database_url: str) -> dict[str, int]:
    """What the killed worker was in the middle of, as the database shows it."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM messages WHERE status = 'sending'),"
            " (SELECT count(*) FROM payment_links WHERE status = 'creating'),"
            " (SELECT count(*) FROM refunds WHERE status = 'requesting')"
        ).fetchone()
    assert row is not None
    return {"sending": row[0], "creating_link": row[1], "refunding": row[2]}


def _unfinished(database_url: str, customer_ids: list[str], order_ids: list[str]) -> list[Any]:
    """Ledger rows, links or refunds of this test left half-done once everything ended."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT 'message', key FROM messages"
            " WHERE customer_id = ANY(%s) AND status IN ('sending', 'queued')"
            " UNION ALL SELECT 'link', reference FROM payment_links"
            " WHERE order_id = ANY(%s) AND status = 'creating'"
            " UNION ALL SELECT 'refund', key FROM refunds"
            " WHERE order_id = ANY(%s) AND status = 'requesting'",
            (customer_ids, order_ids, order_ids),
        ).fetchall()


class Chaos:
    """SIGKILLs, at seeded random moments, with the worker or API started again after."""

    def __init__(
        self, worker: WorkerProcess, api: ApiProcess, database_url: str, twilio: FakeTwilio
    ) -> None:
        self.worker, self.api = worker, api
        self.database_url = database_url
        self.twilio = twilio
        self.rng = random.Random(SEED)
        self.log: list[str] = []
        self.cancelling = asyncio.Event()  # set by the first order flow asking for a refund

    async def _kill_worker(self, why: str) -> None:
        await asyncio.to_thread(self.worker.kill)
        flight = await asyncio.to_thread(_in_flight, self.database_url)
        self.log.append(f"worker SIGKILL ({why}); in flight: {flight}")
        await asyncio.sleep(self.rng.uniform(0.1, 1.5))
        await asyncio.to_thread(self.worker.start)

    async def run(self) -> None:
        # First a kill known to land mid-send: Twilio holds the first text it is given.
        await asyncio.to_thread(self.twilio.held.acquire, True, 60)
        await self._kill_worker("a text at Twilio, its answer not back")
        self.twilio.release()
        api_kills = set(self.rng.sample(range(1, WORKER_KILLS), API_KILLS))
        for n in range(1, WORKER_KILLS):
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))
            await self._kill_worker(f"random #{n}")
            if n in api_kills:
                await asyncio.sleep(self.rng.uniform(0.2, 1.0))
                await asyncio.to_thread(self.api.kill)
                self.log.append("API SIGKILL")
                await asyncio.sleep(self.rng.uniform(0.1, 1.0))
                await asyncio.to_thread(self.api.start)
        # Last, one while an order is being cancelled: its refund is in flight.
        await asyncio.wait_for(self.cancelling.wait(), 120)
        await asyncio.sleep(self.rng.uniform(0.0, 0.3))
        await self._kill_worker("an order being cancelled and refunded")


async def _order_flow(
    sutra: Sutra,
    razorpay: FakeRazorpay,
    temporal: Client,
    order_id: str,
    cancel: bool,
    cancelling: asyncio.Event,
) -> str:
    """Pay the upfront link, then cancel (a refund) or ship and deliver; the final status."""

    async def link() -> dict[str, Any] | None:
        return next(
            (v for v in list(razorpay.links.values()) if v["notes"].get("order_id") == order_id),
            None,
        )

    found = await eventually(link, within=120, interval=0.3, what=f"a link for {order_id}")
    body, event_id = razorpay.pay(found["id"])
    signature = hmac.new(RAZORPAY_WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    await sutra.call(
        "POST",
        "/v1/webhooks/razorpay",
        content=body,
        headers={
            "X-Razorpay-Event-Id": event_id,
            "X-Razorpay-Signature": signature,
            "Content-Type": "application/json",
        },
    )
    await sutra.call(
        "GET",
        f"/v1/orders/{order_id}",
        ok=lambda r: r.status_code == 200 and r.json().get("status") == "confirmed",
        poll=True,  # the payment may reach the order before the link's creation is recorded
    )
    if cancel:
        cancelling.set()
    for to in ["cancelled"] if cancel else ["shipped", "delivered"]:
        # A retry after the API died may find the move already made: 409 saying so is fine.
        await sutra.call(
            "POST",
            f"/v1/orders/{order_id}/transitions",
            json={"to": to, "tracking_url": "https://track.example/t1"},
            ok=lambda r, to=to: (
                r.status_code == 200  # type: ignore[misc]
                or (r.status_code == 409 and r.json().get("current_status") == to)
            ),
        )
    result = await asyncio.wait_for(
        temporal.get_workflow_handle(workflow_ids.order(order_id)).result(), 180
    )
    return str(result["status"])


async def _until(probe: Callable[[], Awaitable[Any]], what: str) -> Any:
    return await eventually(probe, within=180, interval=0.5, what=what)


def _say(what: str) -> None:
    print(f"[crash-safety {time.strftime('%H:%M:%S')}] {what}", flush=True)


def _archive(database_url: str, rule_ids: list[str]) -> None:
    """Fallback when the API is gone: a 1-second cart rule must not outlive this test."""
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE rules SET status = 'archived' WHERE id = ANY(%s)", (rule_ids,))


def _env(
    database_url: str,
    temporal: str,
    task_queue: str,
    api: ApiProcess,
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
    razorpay: FakeRazorpay,
) -> dict[str, str]:
    return sutra_env(
        database_url,
        temporal,
        task_queue,
        SUTRA_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
        SUTRA_PUBLIC_URL=api.url,
        SUTRA_DISPATCHER_POLL_INTERVAL="PT0.1S",
        SUTRA_DISPATCHER_MAX_BACKOFF="PT1S",
        SUTRA_DISPATCHER_RPC_TIMEOUT="PT2S",
        SUTRA_TWILIO_ACCOUNT_SID=twilio.account_sid,
        SUTRA_TWILIO_AUTH_TOKEN=twilio.auth_token,
        SUTRA_TWILIO_API_BASE_URL=twilio.base_url,
        SUTRA_TWILIO_SMS_FROM="+15005550006",
        SUTRA_SENDGRID_API_KEY=sendgrid.api_key,
        SUTRA_SENDGRID_HOST=sendgrid.url,
        SUTRA_SENDGRID_WEBHOOK_PUBLIC_KEY=SIGNER.public_key,
        SUTRA_EMAIL_FROM="orders@shop.example",
        SUTRA_RAZORPAY_KEY_ID=RAZORPAY_KEY_ID,
        SUTRA_RAZORPAY_KEY_SECRET=RAZORPAY_KEY_SECRET,
        SUTRA_RAZORPAY_WEBHOOK_SECRET=RAZORPAY_WEBHOOK_SECRET,
        SUTRA_RAZORPAY_BASE_URL=razorpay.url,
        SUTRA_PROVIDER_TIMEOUT="PT5S",
        SUTRA_SEND_CONFIRMATION_GRACE="PT15S",
        SUTRA_FREQUENCY_CAP="PT1S",
        SUTRA_LOG_LEVEL="INFO",  # "send of … was cut off; provider has it: …" in worker.log
    )


def _order_placed(order_id: str, customer_id: str, phone: str) -> dict[str, Any]:
    return {
        "id": uid("evt"),
        "type": "order.placed",
        "occurred_at": now_iso(),
        "customer": customer(customer_id, phone=phone, email=f"{customer_id}@example.com"),
        "data": {
            "order_id": order_id,
            "items": [item(unit_price="1000.00")],
            "total": "1000.00",
            "currency": "INR",
            "payment_type": "partial_cod",
        },
    }


@pytest.mark.timeout(1500 if SOAK else 300)
async def test_journeys_survive_worker_and_api_kills_and_send_everything_exactly_once(
    database_url: str,
    dev_server: WorkflowEnvironment,
    task_queue: str,
    fake_twilio: FakeTwilio,
    fake_sendgrid: FakeSendGrid,
    fake_razorpay: FakeRazorpay,
):
    temporal = dev_server.client
    folder = Path(tempfile.mkdtemp(prefix="sutra-crash-"))
    stop = asyncio.Event()
    rule_ids: list[str] = []
    prefix = uid("crash")
    rng = random.Random(SEED)
    base = rng.randrange(1_000_000, 8_000_000)
    passed = False
    try:
        with processes() as started:
            api = started.add(ApiProcess(folder, {}))
            api.env = _env(
                database_url,
                temporal.service_client.config.target_host,
                task_queue,
                api,
                fake_twilio,
                fake_sendgrid,
                fake_razorpay,
            )
            api.start()
            worker = started.add(WorkerProcess(folder, api.env))
            worker.start()
            sutra = Sutra(api)
            forwarder = asyncio.create_task(
                _forward_provider_callbacks(sutra, fake_sendgrid, fake_twilio, stop)
            )
            try:
                for rule in (fast_cart_rule(f"{prefix}_cart"), fast_welcome_rule(f"{prefix}_new")):
                    created = await sutra.call("POST", "/v1/rules", json=rule)
                    rule_ids.append(created.json()["id"])
                    await sutra.call("POST", f"/v1/rules/{rule_ids[-1]}/activate")
                welcome_rule = rule_ids[1]

                fake_twilio.hold()  # the first kill lands mid-send (see Chaos.run)
                fake_razorpay.lose_next_creates = 2  # made at Razorpay, answer lost
                chaos = Chaos(worker, api, database_url, fake_twilio)
                chaos_task = asyncio.create_task(chaos.run())

                carts, welcomes, orders = [], [], []
                events = 0
                for n in range(max(CARTS, WELCOMES, ORDERS)):
                    if n < CARTS:
                        cid, phone = f"{prefix}_cart_{n}", phone_for(base + n)
                        event = cart_updated(customer_id=cid, phone=phone, email=f"{cid}@x.example")
                        carts.append((cid, event["data"]["cart_id"], phone))
                        await sutra.post_event(event)
                        events += 1
                    if n < WELCOMES:
                        cid, phone = f"{prefix}_new_{n}", phone_for(base + 10_000 + n)
                        welcomes.append((cid, phone))
                        await sutra.post_event(
                            {
                                "id": uid("evt"),
                                "type": "customer.created",
                                "occurred_at": now_iso(),
                                "customer": customer(cid, phone=phone, email=f"{cid}@x.example"),
                                "data": {},
                            }
                        )
                        events += 1
                    if n < ORDERS:
                        cid, phone = f"{prefix}_buyer_{n}", phone_for(base + 20_000 + n)
                        order_id = uid("ord")
                        orders.append((cid, order_id, phone, n % 2 == 0))
                        await sutra.post_event(_order_placed(order_id, cid, phone))
                        events += 1
                    await asyncio.sleep(rng.uniform(0, 0.2))

                _say(f"{events} events posted")
                flows = [
                    asyncio.create_task(
                        _order_flow(sutra, fake_razorpay, temporal, oid, cancel, chaos.cancelling)
                    )
                    for _, oid, _, cancel in orders
                ]
                await chaos_task
                _say(f"chaos over: {chaos.log}")
                statuses = await asyncio.gather(*flows)
                events += 2 * len(orders)  # a payment webhook and ops moves per order
                _say(f"orders done: {statuses}")

                for cid, cart_id, _ in carts:
                    state = await _until(
                        lambda c=cart_id: _cart_ended(temporal, c),  # type: ignore[misc]
                        f"the journey of cart {cart_id}",
                    )
                    assert state.journey.exit_reason == "completed", (cid, state.journey)
                for cid, _ in welcomes:
                    wid = workflow_ids.journey(welcome_rule, cid)
                    journey = await _until(
                        lambda w=wid: _lifecycle_ended(temporal, w),  # type: ignore[misc]
                        f"the welcome journey of {cid}",
                    )
                    assert journey.exit_reason == "completed", (cid, journey)
                _say("journeys done")
                assert statuses == ["cancelled" if c else "delivered" for *_, c in orders]

                expected = {cid: CART_TEXTS for cid, _, _ in carts}
                expected |= {cid: WELCOME_EMAILS for cid, _ in welcomes}
                expected |= {
                    cid: CANCELLED_ORDER if cancel else DELIVERED_ORDER
                    for cid, _, _, cancel in orders
                }
                order_ids = [oid for _, oid, _, _ in orders]
                unfinished = await asyncio.to_thread(
                    _unfinished, database_url, list(expected), order_ids
                )
                assert unfinished == [], unfinished
                rows = await asyncio.to_thread(ledger, database_url, list(expected))
                report = _check_exactly_once(
                    rows, expected, fake_twilio, fake_sendgrid, fake_razorpay, orders
                )
                print(
                    f"\n[crash-safety] seed {SEED}; {'; '.join(chaos.log)}; events {events};"
                    f" {report}; API calls retried {sutra.retries};"
                    f" worker starts {worker.starts}, API starts {api.starts}"
                )
                # Every history the crash run left must replay on today's code: a worker
                # restart mid-task is when a replay difference would strand a workflow.
                touched = [workflow_ids.order(oid) for oid in order_ids]
                touched += [workflow_ids.cart(cart_id) for _, cart_id, _ in carts]
                touched += [workflow_ids.journey(welcome_rule, cid) for cid, _ in welcomes]
                await _replays(temporal, touched, folder)
                passed = True
                for _, wid in [(c, workflow_ids.journey(welcome_rule, c)) for c, _ in welcomes]:
                    with contextlib.suppress(Exception):  # each waits days for an order
                        await temporal.get_workflow_handle(wid).terminate("test over")
            finally:
                stop.set()
                forwarder.cancel()
                with contextlib.suppress(BaseException):
                    await forwarder
                for rule_id in rule_ids:
                    with contextlib.suppress(Exception):
                        await sutra.call("POST", f"/v1/rules/{rule_id}/archive", within=10)
                await sutra.http.aclose()
    finally:
        if rule_ids:
            _archive(database_url, rule_ids)
        if passed:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            _say(f"logs kept in {folder}")


async def _replays(temporal: Client, workflow_ids_: list[str], folder: Path) -> None:
    replayer = Replayer(workflows=registry.ALL, data_converter=temporal.data_converter)
    broken = []
    for wid in workflow_ids_:
        history = await temporal.get_workflow_handle(wid).fetch_history()
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            kept = folder / f"{wid.replace('/', '_')}.json"
            kept.write_text(history.to_json())
            broken.append(f"{wid}: {result.replay_failure} (history in {kept})")
    assert not broken, "\n".join(broken)


def _wall(monotonic: float) -> datetime:
    """A fake's ``time.monotonic()`` stamp as the wall-clock time the ledger uses."""
    return datetime.now(UTC) - timedelta(seconds=time.monotonic() - monotonic)


def _mismatches(rows: list[dict[str, Any]], twilio: FakeTwilio, sendgrid: FakeSendGrid) -> str:
    """Per recipient, what the provider got that the ledger does not account for."""
    known = {r["provider_message_id"] for r in rows}
    lines = []
    for text in list(twilio.messages):
        if text.sid not in known:
            mine = [r for r in rows if r["to"] == text.to]
            lines.append(
                f"text {text.sid} to {text.to} at {text.date_created:%H:%M:%S.%f}: "
                f"{text.body[:60]!r}; ledger for {text.to}: "
                + "; ".join(
                    f"{r['template']} {r['status']} {r['provider_message_id']}"
                    f" attempts={r['provider_attempts']}"
                    f" sending={r['sending_started_at']:%H:%M:%S.%f}"
                    f" sent={r['sent_at']}"
                    for r in mine
                )
                + "\n  its texts: "
                + "; ".join(
                    f"{t.sid} {t.date_created:%H:%M:%S.%f} {t.body[:30]!r}"
                    for t in list(twilio.messages)
                    if t.to == text.to
                )
                + "\n  its calls: "
                + "; ".join(
                    f"{c.method} {c.status} at {_wall(c.at):%H:%M:%S.%f}"
                    for c in list(twilio.calls)
                    if c.to == text.to
                )
            )
    for mail in list(sendgrid.requests):
        if mail.message_id not in known:
            lines.append(f"email {mail.message_id} to {mail.to}")
    dupes = Counter(r["provider_message_id"] for r in rows)
    lines += [f"ledger rows sharing {pid}: {n}" for pid, n in dupes.items() if n > 1]
    return "\n".join(lines)


async def _cart_ended(temporal: Client, cart_id: str) -> CartState | None:
    state = await temporal.get_workflow_handle(f"cart/{cart_id}").query(
        STATE_QUERY, result_type=CartState
    )
    return state if state.journey_status == "ended" and state.journey else None


async def _lifecycle_ended(temporal: Client, workflow_id: str) -> LifecycleState | None:
    state = await temporal.get_workflow_handle(workflow_id).query(
        STATE_QUERY, result_type=LifecycleState
    )
    # Its steps are over once it has an exit reason; it then waits days for an order to credit.
    return state if state.exit_reason is not None else None


def _check_exactly_once(
    rows: list[dict[str, Any]],
    expected: dict[str, Counter[str]],
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
    razorpay: FakeRazorpay,
    orders: list[tuple[str, str, str, bool]],
) -> str:
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_customer[row["customer_id"]].append(row)
    problems = []
    for cid, templates in expected.items():
        mine = by_customer[cid]
        got = Counter(r["template"] for r in mine if r["status"] in ("sent", "delivered"))
        if got != templates or len(mine) != sum(templates.values()):
            problems.append(f"{cid}: {[(r['template'], r['status'], r['reason']) for r in mine]}")
    assert problems == [], "\n".join(problems)

    # At the providers: each ledger row once, and nothing the ledger does not know of.
    ledger_ids = Counter(r["provider_message_id"] for r in rows)
    texts = [m.sid for m in list(twilio.messages)]
    mails = [m.message_id for m in list(sendgrid.requests)]
    if sorted(texts + mails) != sorted(ledger_ids.elements()):
        raise AssertionError(
            f"provider vs ledger: {len(texts)} texts + {len(mails)} emails at the providers,"
            f" {len(rows)} ledger rows:\n" + _mismatches(rows, twilio, sendgrid)
        )

    # One payment link per order and purpose; refunds only for cancelled orders, once each.
    links = Counter(
        (v["notes"].get("order_id"), v["notes"].get("purpose")) for v in razorpay.links.values()
    )
    assert links == Counter({(oid, "upfront"): 1 for _, oid, _, _ in orders}), links
    refunds = [r for items in razorpay.refunds.values() for r in items]
    refunded = Counter(r["receipt"] for r in refunds)
    assert all(n == 1 for n in refunded.values()), refunded
    assert len(refunds) == sum(1 for *_, cancel in orders if cancel), refunds
    creates = len(razorpay.calls_to("POST", "/v1/payment_links"))
    return (
        f"messages expected {sum(sum(c.values()) for c in expected.values())},"
        f" sent {len(rows)}, at providers {len(texts) + len(mails)},"
        f" duplicates {len(texts) + len(mails) - len(rows)};"
        f" payment links {len(links)} ({creates} create calls), refunds {len(refunds)}"
    )
