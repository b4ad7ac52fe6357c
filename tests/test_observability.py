"""What ops see of the engine at work: the worker's Prometheus page (Sutra's counters beside
the Temporal SDK's own), the API's, and JSON log lines that name the workflow, rule and
message of an activity, and the request of an API call.

A welcome rule's journey sends its first step by SMS, which Twilio's fake refuses for good,
so the step goes out by email through SendGrid's fake, which then reports it delivered and
opened to the API; the rule is then archived, which ends the journey."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from config.logging import configure_logging
from config.settings import Environment, Settings
from contracts import workflow_ids
from services.platform import metrics, worker_metrics
from services.platform.task_failure_log import worker_runtime
from services.platform.temporal import connect
from tests.conftest import ADMIN_KEY, auth, free_port, make_settings, start_api
from tests.factories import customer, eventually, now_iso, uid
from tests.provider_reports import phone
from tests.providers.fake_sendgrid import FakeSendGrid
from tests.providers.fake_twilio import FakeTwilio
from tests.providers.signing import SendGridSigner
from worker import build_worker

SIGNER = SendGridSigner()
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@contextlib.contextmanager
def json_log_lines() -> Iterator[io.StringIO]:
    """The production logging set-up with JSON lines, written here instead of stderr."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging(Settings(env=Environment.test, log_json=True, log_level="INFO"))
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def worker_page() -> worker_metrics.WorkerMetrics:
    """The worker's endpoint, as worker.py serves it (once per process)."""
    return worker_metrics.serve(free_port())


@pytest.fixture
def provider_settings(
    database_url: str,
    dev_server: WorkflowEnvironment,
    task_queue: str,
    fake_twilio: FakeTwilio,
    fake_sendgrid: FakeSendGrid,
) -> Settings:
    return make_settings(
        database_url,
        dev_server.client.service_client.config.target_host,
        task_queue,
        twilio_account_sid=fake_twilio.account_sid,
        twilio_auth_token=fake_twilio.auth_token,
        twilio_api_base_url=fake_twilio.base_url,
        twilio_sms_from="+15005550006",
        sendgrid_api_key=fake_sendgrid.api_key,
        sendgrid_host=fake_sendgrid.url,
        email_from="hello@shop.example",
        sendgrid_webhook_public_key=SIGNER.public_key,
    )


@pytest.fixture
async def running(
    provider_settings: Settings,
    worker_page: worker_metrics.WorkerMetrics,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[Any]:
    api, lifespan = await start_api(provider_settings)
    # The worker's client on the runtime that exports the SDK's metrics to its page.
    client = await connect(provider_settings, runtime=worker_runtime(worker_page.sdk))
    worker = build_worker(
        client, provider_settings.temporal_task_queue, sessionmaker, provider_settings
    )
    async with worker:
        yield api
    await api.http.aclose()
    await lifespan.__aexit__(None, None, None)


async def _page(port: int) -> Samples:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    return scrape(response.text)


async def test_a_journey_moves_the_worker_counters_and_logs_its_ids(
    running: Any,
    worker_page: worker_metrics.WorkerMetrics,
    provider_settings: Settings,
    fake_twilio: FakeTwilio,
    fake_sendgrid: FakeSendGrid,
):
    api = running
    before = await _page(worker_page.port)
    customer_id = uid("c")
    created = await api.http.post(
        "/v1/rules",
        json={
            "name": "Welcome, observed",
            "trigger": {"event": "customer.created"},
            "conditions": {"field": "customer.id", "op": "eq", "value": customer_id},
            "quiet_hours": None,
            "steps": [
                {"send": {"channels": ["sms", "email"], "template": "welcome"}},
                {"wait": "P2D"},
            ],
        },
        headers=auth(ADMIN_KEY),
    )
    rule_id = created.json()["id"]
    assert (
        await api.http.post(f"/v1/rules/{rule_id}/activate", headers=auth(ADMIN_KEY))
    ).is_success
    # Its own number, refused by Twilio for it alone: the refusal suppresses the number as
    # invalid, and the fake (and database) are the whole process's.
    number = phone()
    fake_twilio.fail_next(400, 21211, "The 'To' number is not a valid phone number.", to=number)

    with json_log_lines() as logged:
        event = {
            "id": uid("evt"),
            "type": "customer.created",
            "occurred_at": now_iso(),
            "customer": customer(customer_id, email=f"{customer_id}@example.com", phone=number),
            "data": {},
        }
        assert (await api.post_event(event)).status_code == 202

        async def emailed() -> list[Any] | None:
            page = (await api.get(f"/v1/messages?customer_id={customer_id}")).json()
            sent = [m for m in page["messages"] if (m["channel"], m["status"]) == ("email", "sent")]
            return sent or None

        [email] = await eventually(emailed, what="the welcome email", within=30)
        # SendGrid reports it delivered and opened: the API counts what providers report.
        api_before = scrape((await api.http.get("/metrics")).text)
        body = json.dumps(
            [
                {
                    "email": email["to"],
                    "timestamp": int(time.time()),
                    "event": kind,
                    "sg_event_id": uuid.uuid4().hex,
                    "sg_message_id": f"{email['provider_message_id']}.filter0001",
                    "sutra_message_id": email["id"],
                }
                for kind in ("delivered", "open")
            ]
        ).encode()
        hook = await api.http.post(
            "/v1/webhooks/sendgrid", content=body, headers=SIGNER.headers(body)
        )
        assert hook.status_code == 200, hook.text
        api_after = scrape((await api.http.get("/metrics")).text)
        for status in ("delivered", "opened"):
            reported = {"channel": "email", "status": status}
            assert value(api_after, "sutra_messages_total", **reported) == 1 + value(
                api_before, "sutra_messages_total", **reported
            )
        archived = await api.http.post(f"/v1/rules/{rule_id}/archive", headers=auth(ADMIN_KEY))
        assert archived.status_code == 200

        async def exited() -> Samples | None:
            page = await _page(worker_page.port)
            reason = {"rule_id": rule_id, "reason": "rule_paused"}
            return page if value(page, "sutra_journey_exits_total", **reason) else None

        async def completed() -> float | None:
            # The SDK counts the run's end a task after the exit activity: read apart, so
            # the figures above are not taken later than they need be (other tests'
            # journeys share these counters).
            page = await _page(worker_page.port)
            ended = {
                "task_queue": provider_settings.temporal_task_queue,
                "workflow_type": "LifecycleJourney",
            }.items()
            count = sum(
                v
                for (n, found), v in page.items()
                if n == "temporal_workflow_completed_total" and ended <= found
            )
            return count or None

        after = await eventually(exited, what="the journey's exit counted", within=30)
        await eventually(completed, what="the journey's end counted by the SDK", within=30)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("sutra_journey_starts_total", rule_id=rule_id) == 1
    assert delta("sutra_journey_exits_total", rule_id=rule_id, reason="rule_paused") == 1
    assert delta("sutra_messages_total", channel="sms", status="failed") == 1
    # Other tests' journeys on this process's outbox also count emails sent here; only this
    # test's worker calls SendGrid, whose count below is exact.
    assert delta("sutra_messages_total", channel="email", status="sent") >= 1
    refused = {"provider": "twilio", "operation": "send", "kind": "permanent"}
    assert delta("sutra_provider_errors_total", **refused) == 1
    assert (
        delta(
            "sutra_provider_errors_total", provider="sendgrid", operation="send", kind="permanent"
        )
        == 0
    )
    # The call histogram is the process's, and other tests' journeys in it call Twilio and
    # SendGrid too (CI counted 5 calls of each in the window): this journey's one call of
    # each is among them. Once per call, exactly:
    # test_a_provider_call_is_timed_once_and_a_failure_counted_by_kind.
    assert len(fake_sendgrid.sent_to(email["to"])) == 1
    for provider in ("twilio", "sendgrid"):
        labels = {"provider": provider, "operation": "send"}
        assert delta("sutra_provider_call_seconds_count", **labels) >= 1
        assert delta("sutra_provider_call_seconds_sum", **labels) > 0
    # The Temporal SDK's own figures, on the same page: this task queue's activities.
    queue = provider_settings.temporal_task_queue

    def sdk(name: str, **labels: str) -> float:
        wanted = {"task_queue": queue, **labels}.items()
        return sum(v for (n, found), v in after.items() if n == name and wanted <= found)

    # Two sends: the SMS Twilio refused and the email that followed.
    assert (
        sdk("temporal_activity_execution_latency_seconds_count", activity_type="send_message") == 2
    )
    assert sdk("temporal_worker_task_slots_available", worker_type="ActivityWorker") > 0

    # One JSON line per message decided, naming the journey, its rule and the message.
    journey = workflow_ids.journey(rule_id, customer_id)
    records = [r for r in lines(logged) if r.get("workflow_id") == journey]
    failed = next(r for r in records if r["event"] == "message failed")
    sent = next(r for r in records if r["event"] == "message sent")
    for record in (failed, sent):
        assert record["rule_id"] == rule_id
        assert record["customer_id"] == customer_id
        assert record["activity"] == "send_message"
        assert record["workflow_type"] == "LifecycleJourney"
        assert record["level"] == "info"
        assert record["message_key"].startswith(f"{journey}/")
    assert (failed["channel"], failed["provider"]) == ("sms", "twilio")
    assert "21211" in failed["reason"]
    assert (sent["channel"], sent["provider"]) == ("email", "sendgrid")
    # The fallback is the same step's next attempt: a ledger key of its own.
    assert failed["message_key"].endswith("#1")
    assert sent["message_key"].endswith("#2")


async def test_api_lines_carry_the_request_id(database_url: str, task_queue: str):
    # Temporal is away (nothing listens there): the stranded report logs why it answers 503.
    settings = make_settings(
        database_url, f"127.0.0.1:{free_port()}", task_queue, dispatcher_enabled=False
    )
    api, lifespan = await start_api(settings)
    try:
        with json_log_lines() as logged:
            given = await api.http.get(
                "/v1/ops/stranded-workflows",
                headers={**auth(ADMIN_KEY), "X-Request-ID": "ops-ticket-42"},
            )
            made = await api.http.get("/v1/ops/stranded-workflows", headers=auth(ADMIN_KEY))
            odd = await api.http.get("/healthz", headers={"X-Request-ID": "no spaces allowed here"})
    finally:
        await api.http.aclose()
        await lifespan.__aexit__(None, None, None)

    assert (given.status_code, made.status_code) == (503, 503)
    assert given.headers["x-request-id"] == "ops-ticket-42"
    generated = made.headers["x-request-id"]
    assert len(generated) == 32
    assert int(generated, 16) >= 0
    assert odd.headers["x-request-id"] not in ("no spaces allowed here", generated)
    warned = [r for r in lines(logged) if r["event"].startswith("Temporal unavailable")]
    assert [(r["request_id"], r["path"], r["method"]) for r in warned] == [
        ("ops-ticket-42", "/v1/ops/stranded-workflows", "GET"),
        (generated, "/v1/ops/stranded-workflows", "GET"),
    ]
    assert all(r["level"] == "warning" and r["logger"] == "api.errors" for r in warned)


def test_a_provider_call_is_timed_once_and_a_failure_counted_by_kind():
    """The figures ops alert on, exactly (a provider label no journey uses)."""
    provider = f"unit-{uuid.uuid4().hex[:8]}"

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"provider": provider, **labels}) or 0.0

    def kind(exc: BaseException) -> str:
        return "permanent" if isinstance(exc, ValueError) else "unexpected"

    with metrics.provider_call(provider, "send", kind):
        time.sleep(0.01)
    with pytest.raises(ValueError, match="refused"), metrics.provider_call(provider, "send", kind):
        raise ValueError("refused")

    calls = sample("sutra_provider_call_seconds_count", operation="send")
    assert calls == 2
    assert sample("sutra_provider_call_seconds_sum", operation="send") >= 0.01
    assert sample("sutra_provider_errors_total", operation="send", kind="permanent") == 1
    assert sample("sutra_provider_errors_total", operation="send", kind="unexpected") == 0
