"""The rules of the road for every message, on the time-skipping server: consent, channel
choice, quiet hours in the customer's own time zone, the frequency cap, idempotent sends."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from channels import build_adapters
from config.settings import Environment, Settings
from contracts.messages import MessageOutcome, MessageRequest, SendMessageInput
from db.models import Message
from services.messaging.send import Messaging
from services.templating.samples import SAMPLES
from tests.factories import CART_CONTEXT, known_customer
from tests.messaging_workflow import MessageTestInput, MessageTestWorkflow
from worker import build_worker

KARACHI = ZoneInfo("Asia/Karachi")


@pytest.fixture
def outbox_settings(database_url: str) -> Settings:
    return Settings(env=Environment.test, database_url=database_url)


@pytest.fixture
async def journeys(
    time_skipping: WorkflowEnvironment,
    task_queue: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    outbox_settings: Settings,
) -> AsyncIterator[Journeys]:
    worker = build_worker(
        time_skipping.client,
        task_queue,
        sessionmaker,
        outbox_settings,
        extra_workflows=[MessageTestWorkflow],
    )
    journeys = Journeys(time_skipping, task_queue)
    async with worker:
        yield journeys
    for workflow_id in journeys.started:
        with contextlib.suppress(RPCError):
            await time_skipping.client.get_workflow_handle(workflow_id).terminate()


class Journeys:
    def __init__(self, env: WorkflowEnvironment, task_queue: str) -> None:
        self.env = env
        self.task_queue = task_queue
        self.started: list[str] = []

    async def run(self, customer_id: str, *requests: MessageRequest) -> list[MessageOutcome]:
        workflow_id = f"test-journey/{uuid.uuid4().hex[:10]}"
        self.started.append(workflow_id)
        for request in requests:
            request.workflow_id = workflow_id
        return await self.env.client.execute_workflow(
            MessageTestWorkflow.run,
            MessageTestInput(customer_id=customer_id, requests=list(requests)),
            id=workflow_id,
            task_queue=self.task_queue,
        )

    async def skip_to_local(self, zone: ZoneInfo, hour: int, minute: int = 0) -> datetime:
        """Advance the server's clock to the next hh:mm in ``zone``."""
        now = await self.env.get_current_time()
        local = now.astimezone(zone)
        target = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if target <= local:
            target += timedelta(days=1)
        await self.env.sleep(target - local)
        return target


async def _ledger(sessionmaker: async_sessionmaker[AsyncSession], message_id: Any) -> Message:
    async with sessionmaker() as session:
        row = await session.get(Message, message_id)
    assert row is not None
    return row


def _request(customer_id: str, step: str, **overrides: Any) -> MessageRequest:
    values: dict[str, Any] = {
        "key": f"test/{customer_id}/{step}",
        "customer_id": customer_id,
        "channels": ["email"],
        "template": "cart_reminder_1",
        "context": CART_CONTEXT,
        "step": step,
    }
    values.update(overrides)
    return MessageRequest(**values)


async def test_marketing_due_at_night_waits_for_the_customers_morning(
    journeys: Journeys, sessionmaker: async_sessionmaker[AsyncSession]
):
    customer_id = await known_customer(sessionmaker, timezone="Asia/Karachi")
    due = await journeys.skip_to_local(KARACHI, 23, 0)

    [outcome] = await journeys.run(customer_id, _request(customer_id, "1"))

    assert outcome.status == "sent"
    row = await _ledger(sessionmaker, outcome.message_id)
    assert row.sent_at is not None
    sent_local = row.sent_at.astimezone(KARACHI)
    assert (sent_local.hour, sent_local.minute) == (9, 0)
    assert sent_local.date() == (due + timedelta(days=1)).date()
    assert [d["reason"] for d in row.details["deferrals"]] == ["quiet_hours"]


async def test_quiet_hours_follow_each_customers_own_time_zone(
    journeys: Journeys, sessionmaker: async_sessionmaker[AsyncSession]
):
    new_york = await known_customer(sessionmaker, timezone="America/New_York")
    # 23:00 in Karachi is 13:00 in New York: no reason to wait there.
    await journeys.skip_to_local(KARACHI, 23, 0)

    [outcome] = await journeys.run(new_york, _request(new_york, "1"))

    row = await _ledger(sessionmaker, outcome.message_id)
    assert row.sent_at is not None
    assert row.sent_at.astimezone(KARACHI).hour == 23
    assert "deferrals" not in row.details


async def test_transactional_messages_do_not_wait_for_morning(
    journeys: Journeys, sessionmaker: async_sessionmaker[AsyncSession]
):
    customer_id = await known_customer(sessionmaker, timezone="Asia/Karachi")
    await journeys.skip_to_local(KARACHI, 23, 0)

    [outcome] = await journeys.run(
        customer_id,
        _request(
            customer_id,
            "1",
            kind="transactional",
            template="order_shipped",
            context={"order": SAMPLES["order"]},
        ),
    )

    assert outcome.status == "sent"
    row = await _ledger(sessionmaker, outcome.message_id)
    assert row.sent_at is not None
    local = row.sent_at.astimezone(KARACHI)
    assert (local.hour, local.minute) == (23, 0)
    assert "deferrals" not in row.details


async def test_a_rule_may_ignore_quiet_hours(
    journeys: Journeys, sessionmaker: async_sessionmaker[AsyncSession]
):
    customer_id = await known_customer(sessionmaker, timezone="Asia/Karachi")
    await journeys.skip_to_local(KARACHI, 23, 30)

    [outcome] = await journeys.run(customer_id, _request(customer_id, "1", quiet_hours=None))

    row = await _ledger(sessionmaker, outcome.message_id)
    assert row.sent_at is not None
    local = row.sent_at.astimezone(KARACHI)
    assert (local.hour, local.minute) == (23, 30)


async def test_frequency_cap_defers_the_second_marketing_message_by_16_hours(
    journeys: Journeys, sessionmaker: async_sessionmaker[AsyncSession]
):
    customer_id = await known_customer(sessionmaker)
    await journeys.skip_to_local(KARACHI, 10, 0)

    first, second = await journeys.run(
        customer_id,
        _request(customer_id, "1", quiet_hours=None),
        _request(customer_id, "2", quiet_hours=None),
    )

    one = await _ledger(sessionmaker, first.message_id)
    two = await _ledger(sessionmaker, second.message_id)
    assert one.sent_at is not None
    assert two.sent_at is not None
    assert abs(two.sent_at - one.sent_at - timedelta(hours=16)) < timedelta(seconds=1)
    assert [d["reason"] for d in two.details["deferrals"]] == ["frequency_cap"]


async def test_frequency_cap_can_skip_instead_and_the_ledger_says_so(
    journeys: Journeys, sessionmaker: async_sessionmaker[AsyncSession]
):
    customer_id = await known_customer(sessionmaker)

    first, second = await journeys.run(
        customer_id,
        _request(customer_id, "1", quiet_hours=None),
        _request(customer_id, "2", quiet_hours=None, cap_policy="skip"),
    )

    assert first.status == "sent"
    assert second.status == "suppressed"
    row = await _ledger(sessionmaker, second.message_id)
    assert (row.status, row.reason) == ("suppressed", "frequency_cap")


async def test_the_cap_is_per_channel(
    journeys: Journeys, sessionmaker: async_sessionmaker[AsyncSession]
):
    customer_id = await known_customer(sessionmaker)

    email, sms = await journeys.run(
        customer_id,
        _request(customer_id, "1", quiet_hours=None),
        _request(customer_id, "2", quiet_hours=None, channels=["sms"]),
    )

    one = await _ledger(sessionmaker, email.message_id)
    two = await _ledger(sessionmaker, sms.message_id)
    assert one.sent_at is not None
    assert two.sent_at is not None
    assert two.sent_at - one.sent_at < timedelta(minutes=1)


async def test_the_first_consented_reachable_channel_is_used(
    journeys: Journeys, sessionmaker: async_sessionmaker[AsyncSession]
):
    customer_id = await known_customer(
        sessionmaker, consent={"email": True, "sms": True, "whatsapp": False}, email=None
    )

    [outcome] = await journeys.run(
        customer_id,
        _request(customer_id, "1", quiet_hours=None, channels=["whatsapp", "email", "sms"]),
    )

    assert outcome.channel == "sms"
    row = await _ledger(sessionmaker, outcome.message_id)
    assert row.to == "+923001234567"
    assert row.body is not None
    assert "Rs" in row.body  # the cart total in the customer's locale (en-PK)
    assert row.provider == "outbox"


async def test_no_consented_channel_means_no_message_and_says_why(
    journeys: Journeys, sessionmaker: async_sessionmaker[AsyncSession]
):
    customer_id = await known_customer(
        sessionmaker, consent={"email": False, "sms": False, "whatsapp": False}
    )

    [outcome] = await journeys.run(
        customer_id, _request(customer_id, "1", channels=["email", "sms"])
    )

    assert outcome.status == "suppressed"
    row = await _ledger(sessionmaker, outcome.message_id)
    assert row.reason == "no channel can take it: email: no consent; sms: no consent"


async def test_whatsapp_outside_the_service_window_needs_an_approved_template(
    journeys: Journeys, sessionmaker: async_sessionmaker[AsyncSession]
):
    customer_id = await known_customer(sessionmaker)

    [outcome] = await journeys.run(
        customer_id, _request(customer_id, "1", quiet_hours=None, channels=["whatsapp", "email"])
    )

    assert outcome.channel == "email"
    row = await _ledger(sessionmaker, outcome.message_id)
    assert row.status == "sent"


async def test_the_same_send_retried_is_recorded_and_sent_once(
    sessionmaker: async_sessionmaker[AsyncSession], outbox_settings: Settings
):
    customer_id = await known_customer(sessionmaker)
    messaging = Messaging(outbox_settings, sessionmaker, build_adapters(outbox_settings))
    request = _request(customer_id, "1", quiet_hours=None)

    first = await messaging.send(SendMessageInput(request=request))
    again = await messaging.send(SendMessageInput(request=request))

    assert first.status == again.status == "sent"
    assert first.message_id == again.message_id
    async with sessionmaker() as session:
        rows = list(
            await session.scalars(select(Message).where(Message.customer_id == customer_id))
        )
    assert len(rows) == 1
    assert rows[0].provider_attempts == 1


async def test_two_journeys_sending_at_once_still_respect_the_cap(
    sessionmaker: async_sessionmaker[AsyncSession], outbox_settings: Settings
):
    customer_id = await known_customer(sessionmaker)
    messaging = Messaging(outbox_settings, sessionmaker, build_adapters(outbox_settings))

    results = await asyncio.gather(
        *(
            messaging.send(SendMessageInput(request=_request(customer_id, step, quiet_hours=None)))
            for step in ("journey-a", "journey-b", "journey-c")
        )
    )

    assert sorted(r.status for r in results) == ["deferred", "deferred", "sent"]
    assert {r.reason for r in results if r.status == "deferred"} == {"frequency_cap"}
