"""A worker process really killed (SIGKILL) in the middle of a send, then replaced: the
customer gets the message exactly once, whether the provider had received it or not."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from contracts.messages import MessageOutcome, MessageRequest
from db.models import Message
from tests.conftest import Api, make_settings, start_api
from tests.factories import CART_CONTEXT, known_customer, uid
from tests.messaging_workflow import MessageTestInput, MessageTestWorkflow
from tests.providers.fake_sendgrid import FakeSendGrid
from tests.providers.fake_twilio import FakeTwilio
from tests.providers.signing import SendGridSigner

ROOT = Path(__file__).resolve().parent.parent
SIGNER = SendGridSigner()


class WorkerProcess:
    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.worker_process"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 60
        for line in self.process.stdout:
            if "worker ready" in line:
                break
            if time.monotonic() > deadline:
                raise AssertionError("worker did not start")
        else:
            raise AssertionError("worker exited before it was ready")

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        assert self.process.returncode == -signal.SIGKILL

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def worker_env(
    database_url: str,
    dev_server: WorkflowEnvironment,
    task_queue: str,
    fake_twilio: FakeTwilio,
    fake_sendgrid: FakeSendGrid,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUTRA_")}
    env.update(
        DATABASE_URL=database_url,
        SUTRA_ENV="test",
        SUTRA_TEMPORAL_ADDRESS=dev_server.client.service_client.config.target_host,
        SUTRA_TEMPORAL_TASK_QUEUE=task_queue,
        SUTRA_TWILIO_ACCOUNT_SID=fake_twilio.account_sid,
        SUTRA_TWILIO_AUTH_TOKEN=fake_twilio.auth_token,
        SUTRA_TWILIO_API_BASE_URL=fake_twilio.base_url,
        SUTRA_TWILIO_SMS_FROM="+15005550006",
        SUTRA_SENDGRID_API_KEY=fake_sendgrid.api_key,
        SUTRA_SENDGRID_HOST=fake_sendgrid.url,
        SUTRA_EMAIL_FROM="orders@shop.example",
        SUTRA_PROVIDER_TIMEOUT="PT2S",
        SUTRA_SEND_CONFIRMATION_GRACE="PT60S",
        SUTRA_LOG_LEVEL="WARNING",
    )
    return env


@pytest.fixture
def workers(worker_env: dict[str, str]) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


async def _customer(sessionmaker: async_sessionmaker[AsyncSession], phone: str) -> str:
    customer_id = uid("c")
    return await known_customer(
        sessionmaker, customer_id, phone=phone, email=f"{customer_id}@example.com"
    )


async def _start(
    dev_server: WorkflowEnvironment, task_queue: str, customer_id: str, channel: str
) -> WorkflowHandle[MessageTestWorkflow, list[MessageOutcome]]:
    request = MessageRequest(
        key=f"crash/{uuid.uuid4().hex}",
        customer_id=customer_id,
        channels=[channel],
        template="cart_reminder_1",
        context=CART_CONTEXT,
        quiet_hours=None,
        frequency_cap=None,
        send_timeout=timedelta(seconds=5),
    )
    return await dev_server.client.start_workflow(
        MessageTestWorkflow.run,
        MessageTestInput(customer_id=customer_id, requests=[request]),
        id=f"crash-journey/{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )


async def _wait_held(semaphore: Any) -> None:
    assert await asyncio.to_thread(semaphore.acquire, True, 60), "no send reached the provider"


async def _ledger(sessionmaker: async_sessionmaker[AsyncSession], message_id: Any) -> Message:
    async with sessionmaker() as session:
        row = await session.get(Message, message_id)
    assert row is not None
    return row


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "provider_got_it", [False, True], ids=["before-provider", "after-provider"]
)
async def test_sms_is_sent_once_when_the_worker_dies_mid_send(
    worker_env: dict[str, str],
    workers: list[WorkerProcess],
    dev_server: WorkflowEnvironment,
    task_queue: str,
    fake_twilio: FakeTwilio,
    sessionmaker: async_sessionmaker[AsyncSession],
    provider_got_it: bool,
):
    phone = "+923001239001"
    customer_id = await _customer(sessionmaker, phone)
    workers.append(WorkerProcess(worker_env))
    fake_twilio.hold(drop=not provider_got_it)

    handle = await _start(dev_server, task_queue, customer_id, "sms")
    await _wait_held(fake_twilio.held)
    workers[0].kill()  # the ledger already says "sending"; Twilio has it or not
    fake_twilio.release()
    workers.append(WorkerProcess(worker_env))
    [outcome] = await asyncio.wait_for(handle.result(), timeout=90)

    assert outcome.status == "sent"
    [delivered] = fake_twilio.sent_to(phone)
    row = await _ledger(sessionmaker, outcome.message_id)
    assert row.status == "sent"
    assert row.provider_message_id == delivered.sid
    assert row.provider_attempts == 2
    # Found at Twilio rather than sent again: exactly one POST when Twilio had it.
    assert fake_twilio.posts_to(phone) == (1 if provider_got_it else 2)


@pytest.mark.timeout(180)
async def test_email_cut_off_after_sendgrid_took_it_waits_for_sendgrid_and_never_resends(
    worker_env: dict[str, str],
    workers: list[WorkerProcess],
    dev_server: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    fake_sendgrid: FakeSendGrid,
    sessionmaker: async_sessionmaker[AsyncSession],
):
    customer_id = await _customer(sessionmaker, "+923001239002")
    api, lifespan = await start_api(
        make_settings(
            database_url,
            worker_env["SUTRA_TEMPORAL_ADDRESS"],
            task_queue,
            sendgrid_webhook_public_key=SIGNER.public_key,
        )
    )
    try:
        workers.append(WorkerProcess(worker_env))
        fake_sendgrid.hold()

        handle = await _start(dev_server, task_queue, customer_id, "email")
        await _wait_held(fake_sendgrid.held)
        workers[0].kill()
        fake_sendgrid.release()
        workers.append(WorkerProcess(worker_env))
        [mail] = fake_sendgrid.requests
        message_id = mail.json["personalizations"][0]["custom_args"]["sutra_message_id"]
        await asyncio.sleep(8)  # the replacement worker is now waiting for SendGrid's word
        assert len(fake_sendgrid.requests) == 1
        await _processed(api, message_id, mail.message_id)
        [outcome] = await asyncio.wait_for(handle.result(), timeout=90)
    finally:
        await api.http.aclose()
        await lifespan.__aexit__(None, None, None)

    assert outcome.status == "sent"
    assert len(fake_sendgrid.requests) == 1
    row = await _ledger(sessionmaker, outcome.message_id)
    assert (row.status, row.provider_message_id) == ("sent", mail.message_id)


async def _processed(api: Api, message_id: str, sg_message_id: str) -> None:
    """SendGrid's Event Webhook reporting that it accepted the email."""
    body = json.dumps(
        [
            {
                "email": "someone@example.com",
                "timestamp": int(time.time()),
                "event": "processed",
                "sg_event_id": uuid.uuid4().hex,
                "sg_message_id": f"{sg_message_id}.filter0001",
                "sutra_message_id": message_id,
            }
        ]
    ).encode()
    response = await api.http.post(
        "/v1/webhooks/sendgrid", content=body, headers=SIGNER.headers(body)
    )
    assert response.status_code == 200, response.text
