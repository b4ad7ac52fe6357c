"""The Temporal server SIGKILLed (not stopped) under event load and with journeys mid-wait,
then started again on its own database file: every event the API accepted is applied
once, in order per cart, and every journey sends each of its messages exactly once.

Everything is a real process: ``temporal server start-dev --db-filename`` (killed with its
whole process group: no shutdown, no flush), the API under uvicorn with its dispatcher,
the worker, and the fake Twilio and SendGrid behind the real SDKs. The load is a steady
stream of ``cart.updated`` on a set of carts (each update's quantity is its number, so a
cart's state shows which came last) posted through ``POST /v1/events`` before, during and
after each outage, plus waves of abandoned carts (three texts) and welcome series (two
emails) with waits of a few seconds, killed while most are in a wait.

``SUTRA_SOAK=1`` (``make soak``): three waves, each killed for 45 seconds and again for 5
seconds a second after the restart (the dispatcher delivering the backlog), and more carts
and journeys.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from contracts import workflow_ids
from contracts.carts import CartState
from contracts.lifecycle import LifecycleState
from contracts.names import STATE_QUERY
from tests.conftest import ADMIN_KEY, auth
from tests.factories import cart_updated, customer, eventually, item, now_iso, uid
from tests.processes import (
    ApiProcess,
    DevServer,
    WorkerProcess,
    fast_cart_rule,
    fast_welcome_rule,
    ledger,
    phone_for,
    processes,
    sutra_env,
)
from tests.providers.fake_sendgrid import FakeSendGrid
from tests.providers.fake_twilio import FakeTwilio

SOAK = os.environ.get("SUTRA_SOAK") == "1"
# Each wave of journeys gets a kill while most of them wait between two messages (in soak,
# another one a second after the restart, while the backlog is being delivered).
WAVES = 3 if SOAK else 1
OUTAGE = 45.0 if SOAK else 6.0
LOAD_CARTS = 20 if SOAK else 10
WAVE_CARTS, WAVE_WELCOMES = (20, 10) if SOAK else (6, 4)
# Some 20 events a second in all, what this 2-core machine delivers with room to drain the
# backlog of an outage (each is a workflow task of its cart on the worker).
LOAD_INTERVAL = LOAD_CARTS / 20  # seconds between two updates of one load cart
CART_TEXTS = Counter({"cart_reminder_1": 2, "cart_reminder_2": 1})
WELCOME_EMAILS = Counter({"welcome": 2})


def _env(
    database_url: str,
    temporal: str,
    task_queue: str,
    api: ApiProcess,
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
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
        SUTRA_EMAIL_FROM="orders@shop.example",
        SUTRA_FREQUENCY_CAP="PT1S",
    )


class Shop:
    """The shop's backend: posts events to the API process, one HTTP call each, and keeps
    what was accepted (202) and anything else it got back."""

    def __init__(self, api: ApiProcess) -> None:
        self.http = httpx.AsyncClient(base_url=api.url, timeout=10, headers=auth(ADMIN_KEY))
        self.refused: list[str] = []

    async def post(self, event: dict[str, Any]) -> bool:
        try:
            response = await self.http.post("/v1/events", json=event)
        except httpx.HTTPError as exc:
            self.refused.append(f"{event['id']}: {exc!r}")
            return False
        if response.status_code != 202:
            self.refused.append(f"{event['id']}: {response.status_code} {response.text}")
            return False
        return True


class Load:
    """``cart.updated`` on every load cart every LOAD_INTERVAL, until stopped; the n-th
    update of a cart has quantity n."""

    def __init__(self, shop: Shop, prefix: str) -> None:
        self.shop = shop
        self.carts = [(uid("cart"), f"{prefix}_load_{n}") for n in range(LOAD_CARTS)]
        self.sent: dict[str, list[str]] = {cart_id: [] for cart_id, _ in self.carts}
        self.while_down = 0
        self.down = False
        self.stop = asyncio.Event()

    async def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            began = time.monotonic()
            for cart_id, customer_id in self.carts:
                event = cart_updated(
                    cart_id, customer_id=customer_id, items=[item("SKU1", quantity=n)]
                )
                if await self.shop.post(event):
                    self.sent[cart_id].append(event["id"])
                    self.while_down += self.down
            await asyncio.sleep(max(0.0, LOAD_INTERVAL - (time.monotonic() - began)))


async def _signalled(client: Client, workflow_id: str) -> list[str]:
    """The event ids signalled to a workflow, in history order (re-deliveries included)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    ids = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            attributes = event.workflow_execution_signaled_event_attributes
            if attributes.signal_name != "event":
                continue
            payload = attributes.input.payloads[0]
            ids.append(pydantic_data_converter.payload_converter.from_payload(payload)["event_id"])
    return ids


def _pending_routes(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM event_routes WHERE status = 'pending'").fetchone()
    return int(row[0]) if row else 0


def _routes(database_url: str, event_ids: list[str]) -> list[Any]:
    """How the dispatcher recorded these events' deliveries (for a failure's message)."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT event_id, status, attempts, delivered_at, last_error FROM event_routes"
            " WHERE event_id = ANY(%s) ORDER BY seq",
            (event_ids,),
        ).fetchall()


async def _wave(shop: Shop, prefix: str, wave: int, base: int) -> tuple[list[Any], list[Any]]:
    """A wave of journeys: abandoned carts and new customers, each with a phone of its own."""
    carts, welcomes = [], []
    for n in range(WAVE_CARTS):
        cid, phone = f"{prefix}_cart_{wave}_{n}", phone_for(base + wave * 1000 + n)
        event = cart_updated(customer_id=cid, phone=phone, email=f"{cid}@x.example")
        assert await shop.post(event), shop.refused[-1]
        carts.append((cid, event["data"]["cart_id"], phone))
    for n in range(WAVE_WELCOMES):
        cid, phone = f"{prefix}_new_{wave}_{n}", phone_for(base + wave * 1000 + 500 + n)
        event = {
            "id": uid("evt"),
            "type": "customer.created",
            "occurred_at": now_iso(),
            "customer": customer(cid, phone=phone, email=f"{cid}@x.example"),
            "data": {},
        }
        assert await shop.post(event), shop.refused[-1]
        welcomes.append((cid, f"{cid}@x.example"))
    return carts, welcomes


async def _mid_wait(
    carts: list[Any], welcomes: list[Any], twilio: FakeTwilio, sendgrid: FakeSendGrid
) -> int:
    """Wait until most of the wave has had its first message and is in its first wait."""

    async def started() -> int | None:
        told = sum(1 for _, _, phone in carts if twilio.sent_to(phone))
        told += sum(1 for _, email in welcomes if sendgrid.sent_to(email))
        return told if told * 3 >= 2 * (len(carts) + len(welcomes)) else None

    # Its events queue behind those accepted during the last outage.
    within = 300 if SOAK else 90
    return await eventually(started, within=within, interval=0.1, what="the wave's first messages")


def _say(what: str) -> None:
    print(f"[temporal-kill {time.strftime('%H:%M:%S')}] {what}", flush=True)


@pytest.mark.timeout(1500 if SOAK else 240)
async def test_temporal_killed_under_load_loses_and_doubles_nothing(
    database_url: str, task_queue: str, fake_twilio: FakeTwilio, fake_sendgrid: FakeSendGrid
):
    folder = Path(tempfile.mkdtemp(prefix="sutra-temporal-kill-"))
    prefix = uid("tk")
    base = int(prefix[-6:], 16) % 5_000_000
    passed = False
    try:
        with processes() as started:
            server = started.add(DevServer(folder))
            server.start()
            await server.ready()
            api = started.add(ApiProcess(folder, {}))
            api.env = _env(
                database_url, server.address, task_queue, api, fake_twilio, fake_sendgrid
            )
            api.start()
            worker = started.add(WorkerProcess(folder, api.env))
            worker.start()
            shop = Shop(api)
            rule_ids = []
            for rule in (
                fast_cart_rule(f"{prefix}_cart", wait="PT3S"),
                fast_welcome_rule(f"{prefix}_new", wait="PT3S"),
            ):
                created = await shop.http.post("/v1/rules", json=rule)
                assert created.status_code == 201, created.text
                rule_ids.append(created.json()["id"])
                activated = await shop.http.post(f"/v1/rules/{rule_ids[-1]}/activate")
                assert activated.status_code == 200, activated.text
            welcome_rule = rule_ids[1]

            load = Load(shop, prefix)
            loading = asyncio.create_task(load.run())
            carts: list[Any] = []
            welcomes: list[Any] = []
            kills: list[str] = []
            readyz: list[int] = []

            async def outage(why: str, seconds: float) -> None:
                pid = server.process.pid
                await asyncio.to_thread(server.kill)  # SIGKILL to its process group
                load.down = True
                with pytest.raises(ProcessLookupError):
                    os.killpg(pid, 0)  # nothing of it is left running
                kills.append(f"kill #{len(kills) + 1} ({why}), down {seconds:.0f}s")
                _say(kills[-1])
                await asyncio.sleep(1.5)
                readyz.append((await shop.http.get("/readyz")).status_code)
                await asyncio.sleep(seconds - 1.5)
                await asyncio.to_thread(server.start)  # on the same --db-filename
                await server.ready()
                load.down = False

            try:
                await asyncio.sleep(2)
                for wave in range(WAVES):
                    wave_carts, wave_welcomes = await _wave(shop, prefix, wave, base)
                    carts += wave_carts
                    welcomes += wave_welcomes
                    told = await _mid_wait(wave_carts, wave_welcomes, fake_twilio, fake_sendgrid)
                    await outage(f"{told} journeys past their first message", OUTAGE)
                    if SOAK:
                        # Again while the dispatcher delivers what piled up meanwhile.
                        await asyncio.sleep(1)
                        backlog = await asyncio.to_thread(_pending_routes, database_url)
                        await outage(f"{backlog} routes still to deliver", 5)
                    await asyncio.sleep(3)  # the load goes on after the restart too
            finally:
                load.stop.set()
                await loading
            restarted = time.monotonic()
            assert shop.refused == [], shop.refused[:5]
            assert readyz == [503] * len(kills)  # Temporal down, intake still answering 202
            assert load.while_down >= LOAD_CARTS * OUTAGE / LOAD_INTERVAL * WAVES * 0.5

            client = await Client.connect(server.address, data_converter=pydantic_data_converter)
            report = await _check_events(client, database_url, load)
            drained = time.monotonic() - restarted + 3
            for _, cart_id, _ in carts:
                state = await eventually(
                    lambda c=cart_id: _cart_ended(client, c),  # type: ignore[misc]
                    within=180,
                    interval=0.5,
                    what=f"the journey of cart {cart_id}",
                )
                assert state.journey is not None
                assert state.journey.exit_reason == "completed", (cart_id, state.journey)
            for cid, _ in welcomes:
                wid = workflow_ids.journey(welcome_rule, cid)
                journey = await eventually(
                    lambda w=wid: _lifecycle_ended(client, w),  # type: ignore[misc]
                    within=180,
                    interval=0.5,
                    what=f"the welcome journey of {cid}",
                )
                assert journey.exit_reason == "completed", (cid, journey)
            expected = {cid: CART_TEXTS for cid, _, _ in carts}
            expected |= {cid: WELCOME_EMAILS for cid, _ in welcomes}
            messages = _check_messages(database_url, expected, fake_twilio, fake_sendgrid)
            print(
                f"\n[temporal-kill] {'; '.join(kills)};"
                f" {report}; events applied {drained:.1f}s after the last restart;"
                f" journeys {len(carts)} carts + {len(welcomes)} welcomes; {messages};"
                f" server starts {server.starts}, worker starts {worker.starts},"
                f" API starts {api.starts}"
            )
            for rule_id in rule_ids:
                await shop.http.post(f"/v1/rules/{rule_id}/archive")
            await shop.http.aclose()
            passed = True
    finally:
        if passed:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            _say(f"logs kept in {folder}")


async def _check_events(client: Client, database_url: str, load: Load) -> str:
    """Every accepted event applied once, in acceptance order per cart."""
    redelivered = 0
    for cart_id, _ in load.carts:
        sent = load.sent[cart_id]

        async def applied(c: str = cart_id, n: int = len(sent)) -> CartState | None:
            state = await client.get_workflow_handle(f"cart/{c}").query(
                STATE_QUERY, result_type=CartState
            )
            return state if state.events_applied >= n else None

        try:
            state = await eventually(
                applied, within=180 if SOAK else 90, interval=0.5, what=f"cart/{cart_id}"
            )
        except AssertionError:
            seen = set(await _signalled(client, f"cart/{cart_id}"))
            missing = [e for e in sent if e not in seen]
            raise AssertionError(
                f"cart/{cart_id}: {len(missing)} accepted events never reached it; their"
                f" routes: {_routes(database_url, missing)[:10]}"
            ) from None
        signalled = await _signalled(client, f"cart/{cart_id}")
        # A signal whose answer the kill cut off is delivered again; the cart ignores the
        # second copy (its event id), so each is applied once, in the order accepted.
        first_seen = list(dict.fromkeys(signalled))
        assert first_seen == sent, (cart_id, len(first_seen), len(sent))
        assert state.events_applied == len(sent), (cart_id, state.events_applied, len(sent))
        assert state.snapshot is not None
        assert [i.quantity for i in state.snapshot.items] == [len(sent)]
        redelivered += len(signalled) - len(first_seen)
    total = sum(len(ids) for ids in load.sent.values())
    return (
        f"{total} cart events accepted ({load.while_down} while Temporal was down),"
        f" {total} applied once each in order, {redelivered} signals delivered twice"
        " (ignored by the cart)"
    )


def _check_messages(
    database_url: str,
    expected: dict[str, Counter[str]],
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
) -> str:
    rows = ledger(database_url, list(expected))
    problems = []
    for cid, templates in expected.items():
        mine = [r for r in rows if r["customer_id"] == cid]
        got = Counter(r["template"] for r in mine if r["status"] in ("sent", "delivered"))
        if got != templates or len(mine) != sum(templates.values()):
            problems.append(f"{cid}: {[(r['template'], r['status'], r['reason']) for r in mine]}")
    assert problems == [], "\n".join(problems)
    # At the providers: each ledger row exactly once, nothing the ledger does not know of.
    phones = {r["to"] for r in rows if r["channel"] == "sms"}
    emails = {r["to"] for r in rows if r["channel"] == "email"}
    texts = [m.sid for m in list(twilio.messages) if m.to in phones]
    mails = [m.message_id for m in list(sendgrid.requests) if m.to[0] in emails]
    known = Counter(r["provider_message_id"] for r in rows)
    if sorted(texts + mails) != sorted(known.elements()):
        raise AssertionError(
            f"{len(texts)} texts + {len(mails)} emails at the providers, {len(rows)} ledger"
            " rows:\n" + _mismatches(rows, twilio, sendgrid, phones | emails)
        )
    want = sum(sum(c.values()) for c in expected.values())
    return (
        f"messages expected {want}, at the providers {len(texts) + len(mails)},"
        f" duplicates {len(texts) + len(mails) - len(rows)}"
    )


def _mismatches(
    rows: list[dict[str, Any]], twilio: FakeTwilio, sendgrid: FakeSendGrid, ours: set[str]
) -> str:
    """What the providers got that the ledger does not account for, with the ledger's rows
    for the same recipient."""
    known = {r["provider_message_id"] for r in rows}
    got = [(m.sid, m.to, m.date_created.isoformat()) for m in list(twilio.messages)]
    got += [
        (m.message_id, m.to[0], str(m.json["personalizations"][0].get("custom_args")))
        for m in list(sendgrid.requests)
    ]
    lines = []
    for provider_id, to, at in got:
        if to in ours and provider_id not in known:
            mine = [
                f"{r['template']} {r['status']} {r['provider_message_id']}"
                f" attempts={r['provider_attempts']} started={r['sending_started_at']}"
                f" sent={r['sent_at']} workflow={r['workflow_id']}"
                for r in rows
                if r["to"] == to
            ]
            lines.append(f"{provider_id} to {to} {at}; ledger: " + "; ".join(mine))
    return "\n".join(lines)


async def _cart_ended(client: Client, cart_id: str) -> CartState | None:
    state = await client.get_workflow_handle(f"cart/{cart_id}").query(
        STATE_QUERY, result_type=CartState
    )
    return state if state.journey_status == "ended" and state.journey else None


async def _lifecycle_ended(client: Client, workflow_id: str) -> LifecycleState | None:
    state = await client.get_workflow_handle(workflow_id).query(
        STATE_QUERY, result_type=LifecycleState
    )
    return state if state.exit_reason is not None else None
