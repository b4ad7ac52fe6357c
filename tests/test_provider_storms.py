"""Provider storms: SendGrid and Twilio answering 429 with ``Retry-After`` and 5xx for a
while, and now and then a 500 for a message they kept anyway. Sends wait as long as the
provider asked, every message arrives exactly once afterwards, and a marketing message the
storm pushed into the customer's night waits for the morning (an order update does not).

The fakes keep every request (``calls``: when, to whom, what they answered), so both the
spacing of attempts and a duplicate are seen. ``SUTRA_SOAK=1`` (``make soak``): minutes of
storm over many more journeys.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import statistics
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.messaging import MessagingActivities
from channels import build_adapters
from config.settings import Settings
from contracts.messages import Channel, MessageOutcome, MessageRequest, SendMessageInput
from contracts.retry_policies import SEND_RETRY
from db.models import Message
from services.messaging.send import Messaging
from services.templating.samples import SAMPLES
from tests.conftest import Api, make_settings, start_api
from tests.factories import CART_CONTEXT, known_customer, uid
from tests.messaging_workflow import MessageTestInput, MessageTestWorkflow
from tests.processes import phone_for
from tests.providers.fake_sendgrid import FakeSendGrid
from tests.providers.fake_twilio import FakeTwilio
from tests.providers.signing import SendGridSigner
from tests.providers.storm import Call, Phase
from worker import build_worker

SOAK = os.environ.get("SUTRA_SOAK") == "1"
# Journeys per channel (SMS through Twilio, email through SendGrid), two messages each.
JOURNEYS = 40 if SOAK else 5
# Journeys start this many seconds apart, so they meet the storm in different phases.
STAGGER = 2.5 if SOAK else 0.0
KARACHI = ZoneInfo("Asia/Karachi")
SIGNER = SendGridSigner()
# No retry of an error without Retry-After comes sooner than the policy's first interval.
FIRST_BACKOFF = SEND_RETRY.initial_interval.total_seconds()


def _storm() -> list[Phase]:
    if SOAK:
        return [  # about four minutes
            Phase(429, requests=20, retry_after=5),
            Phase(429, seconds=60, retry_after=2),
            Phase(503, seconds=40, retry_after=3, share=0.8),
            Phase(500, seconds=40, accept=True, share=0.5),
            Phase(500, seconds=40, share=0.6),
            Phase(429, seconds=60, retry_after=2, share=0.7, http_date=True),
        ]
    return [
        # Longer than the policy's first backoff (2 s): only the header explains the wait.
        Phase(429, requests=4, retry_after=5),
        Phase(429, seconds=4, retry_after=2),
        Phase(500, requests=2, accept=True),  # kept, and answered 500 anyway
        Phase(503, seconds=2),
        Phase(500, requests=2),
    ]


def _provider_settings(
    database_url: str,
    temporal_address: str,
    task_queue: str,
    sendgrid: FakeSendGrid,
    twilio: FakeTwilio,
    **overrides: Any,
) -> Settings:
    values: dict[str, Any] = {
        "sendgrid_api_key": sendgrid.api_key,
        "sendgrid_host": sendgrid.url,
        "sendgrid_webhook_public_key": SIGNER.public_key,
        "email_from": "orders@shop.example",
        "twilio_account_sid": twilio.account_sid,
        "twilio_auth_token": twilio.auth_token,
        "twilio_api_base_url": twilio.base_url,
        "twilio_sms_from": "+15005550006",
        # SendGrid has no lookup: a 500 it may have kept waits this long for its report.
        "send_confirmation_grace": timedelta(seconds=8),
        "log_level": "WARNING",  # not every request the SDKs make
    }
    values.update(overrides)
    return make_settings(database_url, temporal_address, task_queue, **values)


async def _customer(sessionmaker: async_sessionmaker[AsyncSession], **overrides: Any) -> str:
    customer_id = uid("c")
    overrides.setdefault("email", f"{customer_id}@example.com")
    return await known_customer(sessionmaker, customer_id, **overrides)


def _reminder(customer_id: str, channel: Channel, **overrides: Any) -> MessageRequest:
    values: dict[str, Any] = {
        "key": f"storm/{customer_id}/reminder",
        "customer_id": customer_id,
        "channels": [channel],
        "template": "cart_reminder_1",
        "context": CART_CONTEXT,
        "step": "reminder",
    }
    values.update(overrides)
    return MessageRequest(**values)


def _order_update(customer_id: str, channel: Channel) -> MessageRequest:
    return MessageRequest(
        key=f"storm/{customer_id}/shipped",
        customer_id=customer_id,
        channels=[channel],
        template="order_shipped",
        kind="transactional",
        context={"order": SAMPLES["order"]},
        step="shipped",
    )


async def _rows(
    sessionmaker: async_sessionmaker[AsyncSession], customer_ids: list[str]
) -> list[Message]:
    async with sessionmaker() as session:
        return list(
            await session.scalars(select(Message).where(Message.customer_id.in_(customer_ids)))
        )


# --- the send activity -------------------------------------------------------------------


async def test_the_send_activity_waits_as_long_as_the_provider_asks_within_a_bound(
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_sendgrid: FakeSendGrid,
    fake_twilio: FakeTwilio,
):
    settings = _provider_settings(
        database_url,
        "127.0.0.1:7233",
        "unused",
        fake_sendgrid,
        fake_twilio,
        provider_retry_after_max=timedelta(minutes=10),
    )
    activities = MessagingActivities(Messaging(settings, sessionmaker, build_adapters(settings)))
    customer_id = await _customer(sessionmaker)
    send = SendMessageInput(request=_reminder(customer_id, "email", quiet_hours=None))
    fake_sendgrid.start_storm(
        Phase(429, requests=1, retry_after=90),
        Phase(503, requests=1, retry_after=7200, http_date=True),  # two hours: too long
        Phase(500, requests=1),
    )

    delays, statuses = [], []
    for _ in range(3):
        with pytest.raises(ApplicationError) as caught:
            await ActivityEnvironment().run(activities.send_message, send)
        delays.append(caught.value.next_retry_delay)
        [row] = await _rows(sessionmaker, [customer_id])
        statuses.append(row.status)

    assert delays == [timedelta(seconds=90), timedelta(minutes=10), None]
    # 429 and 503 turned the mail away; SendGrid may have kept the one it answered 500.
    assert statuses == ["queued", "queued", "sending"]
    assert fake_sendgrid.requests == []


# --- a storm during journeys, on the dev server --------------------------------------------


async def _processed(api: Api, mail: Any) -> None:
    """SendGrid's Event Webhook reporting a mail it took."""
    body = json.dumps(
        [
            {
                "email": mail.to[0],
                "timestamp": int(time.time()),
                "event": "processed",
                "sg_event_id": uuid.uuid4().hex,
                "sg_message_id": f"{mail.message_id}.filter0001",
                "sutra_message_id": mail.json["personalizations"][0]["custom_args"][
                    "sutra_message_id"
                ],
            }
        ]
    ).encode()
    response = await api.http.post(
        "/v1/webhooks/sendgrid", content=body, headers=SIGNER.headers(body)
    )
    assert response.status_code == 200, response.text


async def _report_processed(api: Api, sendgrid: FakeSendGrid, stop: asyncio.Event) -> None:
    """What SendGrid does by itself: report each mail it kept, 500 answered or not."""
    told: set[str] = set()
    while not stop.is_set():
        for mail in list(sendgrid.requests):
            if mail.message_id not in told:
                await _processed(api, mail)
                told.add(mail.message_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


def _waits(calls: list[Call]) -> list[tuple[Call, float]]:
    """Every error answer with the time until the same recipient's next request. A
    journey sends one message at a time, so that request is the next attempt."""
    by_recipient: defaultdict[str | None, list[Call]] = defaultdict(list)
    for call in calls:
        by_recipient[call.to].append(call)
    waits = []
    for seq in by_recipient.values():
        seq.sort(key=lambda c: c.at)
        waits += [(a, b.at - a.at) for a, b in itertools.pairwise(seq) if a.status >= 400]
    return waits


def _figures(name: str, calls: list[Call], waits: list[tuple[Call, float]]) -> str:
    statuses = Counter(c.status for c in calls)
    kept_errors = sum(1 for c in calls if c.kept and c.status >= 400)
    parts = [f"{name}: {len(calls)} requests {dict(sorted(statuses.items()))}"]
    parts.append(f"{kept_errors} kept then answered 5xx")

    def form(call: Call) -> str:
        value = call.retry_after or ""
        return f"Retry-After: {value}" if value.isdigit() else f"a date {call.asked:g}+ s ahead"

    for asked in sorted({form(c) for c, _ in waits if c.retry_after}):
        gaps = [w for c, w in waits if c.retry_after and form(c) == asked]
        parts.append(
            f"after {asked}: n={len(gaps)} min={min(gaps):.2f}s"
            f" median={statistics.median(gaps):.2f}s max={max(gaps):.2f}s"
        )
    plain = [w for c, w in waits if not c.retry_after]
    if plain:
        parts.append(f"after 5xx without it: n={len(plain)} min={min(plain):.2f}s")
    return "; ".join(parts)


@pytest.mark.timeout(1500 if SOAK else 240)
async def test_after_a_storm_every_message_arrives_once_and_no_attempt_came_too_soon(
    database_url: str,
    dev_server: WorkflowEnvironment,
    task_queue: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_sendgrid: FakeSendGrid,
    fake_twilio: FakeTwilio,
):
    address = dev_server.client.service_client.config.target_host
    settings = _provider_settings(database_url, address, task_queue, fake_sendgrid, fake_twilio)
    texts = [await _customer(sessionmaker, phone=phone_for(700 + n)) for n in range(JOURNEYS)]
    emails = [await _customer(sessionmaker, phone=phone_for(800 + n)) for n in range(JOURNEYS)]
    journeys: list[tuple[str, Channel]] = [(c, "sms") for c in texts]
    journeys += [(c, "email") for c in emails]
    api, lifespan = await start_api(settings)
    stop = asyncio.Event()
    reporter = asyncio.create_task(_report_processed(api, fake_sendgrid, stop))
    began = time.monotonic()
    try:
        async with build_worker(
            dev_server.client,
            task_queue,
            sessionmaker,
            settings,
            extra_workflows=[MessageTestWorkflow],
        ):
            fake_twilio.start_storm(*_storm())
            fake_sendgrid.start_storm(*_storm())
            handles = []
            for n, (customer_id, channel) in enumerate(journeys):
                if STAGGER and n:
                    await asyncio.sleep(STAGGER)
                workflow_id = f"storm/{uuid.uuid4().hex[:10]}"
                # Quiet hours would hold the reminder whenever this runs at night in Karachi;
                # they are shown holding storm-delayed messages on the time-skipping server.
                requests = [
                    _reminder(customer_id, channel, quiet_hours=None),
                    _order_update(customer_id, channel),
                ]
                for request in requests:
                    request.workflow_id = workflow_id
                handles.append(
                    await dev_server.client.start_workflow(
                        MessageTestWorkflow.run,
                        MessageTestInput(customer_id=customer_id, requests=requests),
                        id=workflow_id,
                        task_queue=task_queue,
                    )
                )
            outcomes: list[list[MessageOutcome]] = await asyncio.wait_for(
                asyncio.gather(*(h.result() for h in handles)), timeout=1200 if SOAK else 180
            )
    finally:
        stop.set()
        await reporter
        await api.http.aclose()
        await lifespan.__aexit__(None, None, None)
    took = time.monotonic() - began

    assert [o.status for journey in outcomes for o in journey] == ["sent"] * 4 * JOURNEYS
    rows = await _rows(sessionmaker, texts + emails)
    assert len(rows) == 4 * JOURNEYS  # one ledger row per message: no step recorded twice
    assert {r.status for r in rows} == {"sent"}
    by_id = {str(r.id): r for r in rows}

    # One to one: each message the providers kept is one ledger row, and every row is kept.
    mails = Counter(
        m.json["personalizations"][0]["custom_args"]["sutra_message_id"]
        for m in fake_sendgrid.requests
    )
    texted = Counter(
        parse_qs(urlsplit(m.status_callback or "").query)["message_id"][0]
        for m in fake_twilio.messages
    )
    assert set(mails.values()) == {1}, "an email reached SendGrid twice"
    assert set(texted.values()) == {1}, "a text reached Twilio twice"
    assert set(mails) == {i for i, r in by_id.items() if r.channel == "email"}
    assert set(texted) == {i for i, r in by_id.items() if r.channel == "sms"}
    sids = {
        parse_qs(urlsplit(m.status_callback or "").query)["message_id"][0]: m.sid
        for m in fake_twilio.messages
    }
    assert all(by_id[i].provider_message_id == sid for i, sid in sids.items())
    assert all(
        by_id[m.json["personalizations"][0]["custom_args"]["sutra_message_id"]].provider_message_id
        == m.message_id
        for m in fake_sendgrid.requests
    )

    # No attempt came sooner than the provider asked, or than the backoff allows.
    seen = {"twilio": list(fake_twilio.calls), "sendgrid": list(fake_sendgrid.calls)}
    waits = {name: _waits(calls) for name, calls in seen.items()}
    print(f"\n{4 * JOURNEYS} messages in {took:.0f}s")
    for name, calls in seen.items():
        print(_figures(name, calls, waits[name]))
    for name, calls in seen.items():
        assert any(c.retry_after == "5" for c, _ in waits[name]), f"{name}: the storm missed"
        assert any(c.kept and c.status == 500 for c in calls), f"{name}: nothing kept on 500"
        too_soon = [
            (c.status, c.retry_after, round(w, 2))
            for c, w in waits[name]
            if w < (c.asked if c.asked is not None else FIRST_BACKOFF)
        ]
        assert too_soon == [], f"{name}: attempts sooner than asked"


# --- quiet hours for late arrivals, on the time-skipping server ---------------------------


class Evening:
    """Journeys on the time-skipping server, for a customer in Karachi."""

    def __init__(self, env: WorkflowEnvironment, task_queue: str) -> None:
        self.env = env
        self.task_queue = task_queue
        self.started: list[str] = []

    async def skip_to_local(self, hour: int, minute: int, second: int = 0) -> datetime:
        now = (await self.env.get_current_time()).astimezone(KARACHI)
        target = now.replace(hour=hour, minute=minute, second=second, microsecond=0)
        if target <= now:
            target += timedelta(days=1)
        await self.env.sleep(target - now)
        return target

    async def run(self, customer_id: str, request: MessageRequest) -> MessageOutcome:
        workflow_id = f"storm-evening/{uuid.uuid4().hex[:10]}"
        self.started.append(workflow_id)
        request.workflow_id = workflow_id
        [outcome] = await self.env.client.execute_workflow(
            MessageTestWorkflow.run,
            MessageTestInput(customer_id=customer_id, requests=[request]),
            id=workflow_id,
            task_queue=self.task_queue,
        )
        return outcome


@pytest.fixture
async def evening(
    time_skipping: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_sendgrid: FakeSendGrid,
    fake_twilio: FakeTwilio,
) -> AsyncIterator[Evening]:
    settings = _provider_settings(
        database_url,
        "unused",
        task_queue,
        fake_sendgrid,
        fake_twilio,
        send_confirmation_grace=timedelta(minutes=1),
    )
    journeys = Evening(time_skipping, task_queue)
    async with build_worker(
        time_skipping.client,
        task_queue,
        sessionmaker,
        settings,
        extra_workflows=[MessageTestWorkflow],
    ):
        yield journeys
    for workflow_id in journeys.started:
        with contextlib.suppress(RPCError):
            await time_skipping.client.get_workflow_handle(workflow_id).terminate()


@pytest.mark.parametrize(
    ("storm", "answers"),
    [
        ([Phase(429, requests=3, retry_after=60)], [429, 429, 429, 202]),
        # A 500 SendGrid did not keep: the row stays "sending" until the grace says it
        # is not coming; then it is decided again, and it is night by then.
        (
            [Phase(429, requests=2, retry_after=60), Phase(500, requests=1)],
            [429, 429, 500, 202],
        ),
    ],
    ids=["rate-limited", "500-not-kept"],
)
async def test_a_reminder_the_storm_pushes_into_the_night_waits_for_the_morning(
    evening: Evening,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_sendgrid: FakeSendGrid,
    storm: list[Phase],
    answers: list[int],
):
    customer_id = await _customer(sessionmaker, timezone="Asia/Karachi")
    due = await evening.skip_to_local(20, 58, 30)  # a minute and a half before quiet hours
    fake_sendgrid.start_storm(*storm)  # "wait a minute", more than once

    outcome = await evening.run(customer_id, _reminder(customer_id, "email"))

    assert outcome.status == "sent"
    [row] = await _rows(sessionmaker, [customer_id])
    assert row.sent_at is not None
    sent = row.sent_at.astimezone(KARACHI)
    assert (sent.date(), sent.hour, sent.minute) == ((due + timedelta(days=1)).date(), 9, 0)
    [deferral] = row.details["deferrals"]
    assert deferral["reason"] == "quiet_hours"
    assert datetime.fromisoformat(deferral["until"]) == sent.replace(second=0, microsecond=0)
    held_at = datetime.fromisoformat(deferral["at"]).astimezone(KARACHI)
    assert (held_at.date(), held_at.hour) == (due.date(), 21)
    [mail] = fake_sendgrid.requests  # once, in the morning, on the same ledger row
    assert row.provider_message_id == mail.message_id
    assert [c.status for c in fake_sendgrid.calls] == answers


async def test_an_order_update_the_same_storm_delays_still_goes_out_at_night(
    evening: Evening,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_twilio: FakeTwilio,
):
    customer_id = await _customer(sessionmaker, timezone="Asia/Karachi")
    due = await evening.skip_to_local(20, 58, 30)
    fake_twilio.start_storm(Phase(429, requests=3, retry_after=60))

    outcome = await evening.run(customer_id, _order_update(customer_id, "sms"))

    assert outcome.status == "sent"
    [row] = await _rows(sessionmaker, [customer_id])
    assert row.sent_at is not None
    sent = row.sent_at.astimezone(KARACHI)
    assert (sent.date(), sent.hour) == (due.date(), 21)
    assert sent - due < timedelta(minutes=5)
    assert "deferrals" not in row.details
    assert len(fake_twilio.messages) == 1
    assert [c.status for c in fake_twilio.calls] == [429, 429, 429, 201]
