"""Stranded workflows are found and reported (issue 11).

A workflow whose tasks keep failing is stuck while Temporal retries it forever. Each test
strands one on purpose on the dev server, one with an exception in workflow code and one
with a nondeterminism error on replay after an unguarded code change, and sees it within
a minute where ops look: ``GET /v1/ops/stranded-workflows``, the
``sutra_stranded_workflows`` gauge on ``/metrics`` (``/readyz`` staying 200) and one
``workflow task failing`` line in the worker's log, however often the task is retried.

The worker is the production wiring (``build_worker`` on a client with the worker's SDK
runtime, payloads encrypted) with the test's workflows added. Their workflow task timeout
is 3 s instead of 10 s: Temporal counts the retry's timeout as the second problem, so
this only shortens the wait.
"""

from __future__ import annotations

import base64
import contextlib
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from services.platform.task_failure_log import worker_runtime
from services.platform.temporal import connect
from tests.conftest import ADMIN_KEY, Api, auth, make_settings
from tests.factories import eventually
from tests.stranding_workflows import POKE, BuggyWorkflow, ChangedWorkflow, RecordedWorkflow
from worker import build_worker

TASK_TIMEOUT = timedelta(seconds=3)
WITHIN = 60.0


@pytest.fixture
def settings(database_url: str, dev_server: WorkflowEnvironment, task_queue: str) -> Settings:
    return make_settings(
        database_url,
        dev_server.client.service_client.config.target_host,
        task_queue,
        stranded_check_every=timedelta(seconds=1),
        # As in production: failure messages are encrypted in Temporal, and still readable
        # in the listing.
        payload_keys="k1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
    )


@pytest.fixture
async def client(settings: Settings) -> Client:
    return await connect(settings, runtime=worker_runtime())


@contextlib.asynccontextmanager
async def running_worker(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    workflows: Sequence[type],
) -> AsyncIterator[None]:
    worker = build_worker(
        client, settings.temporal_task_queue, sessionmaker, settings, extra_workflows=workflows
    )
    async with worker:
        yield


async def start(client: Client, workflow: Any, settings: Settings) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        workflow.run,
        id=f"stranding/{uuid.uuid4().hex[:10]}",
        task_queue=settings.temporal_task_queue,
        task_timeout=TASK_TIMEOUT,
    )


async def waiting_for_poke(handle: WorkflowHandle[Any, Any]) -> bool:
    """True once the workflow has completed a workflow task and has nothing to do."""
    events = [event async for event in handle.fetch_history_events()]
    return events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED


async def listed(api: Api, workflow_id: str) -> dict[str, Any] | None:
    response = await api.get("/v1/ops/stranded-workflows")
    assert response.status_code == 200, response.text
    return next((w for w in response.json()["workflows"] if w["workflow_id"] == workflow_id), None)


def gauge(text: str, workflow_type: str) -> float | None:
    found = re.search(
        rf'^sutra_stranded_workflows\{{workflow_type="{workflow_type}"\}} (\S+)$', text, re.M
    )
    return float(found.group(1)) if found else None


def worker_lines(caplog: pytest.LogCaptureFixture, run_id: str) -> list[dict[str, Any]]:
    """The worker's structured ``workflow task failing`` lines about one run."""
    return [
        record.msg
        for record in caplog.records
        if isinstance(record.msg, dict)
        and record.msg.get("event") == "workflow task failing"
        and record.msg.get("run_id") == run_id
    ]


async def reported(api: Api, handle: WorkflowHandle[Any, Any], attempts: int) -> dict[str, Any]:
    """The listing entry, once the workflow is listed, counted and retried ``attempts``."""

    async def probe() -> dict[str, Any] | None:
        entry = await listed(api, handle.id)
        metrics = (await api.http.get("/metrics")).text
        if entry and entry["attempts"] >= attempts and gauge(metrics, entry["workflow_type"]):
            return entry
        return None

    return await eventually(probe, within=WITHIN, interval=0.5, what=f"{handle.id} reported")


async def assert_reported_everywhere(
    api: Api, caplog: pytest.LogCaptureFixture, entry: dict[str, Any], workflow_type: str
) -> dict[str, Any]:
    metrics = (await api.http.get("/metrics")).text
    assert gauge(metrics, workflow_type) == 1.0
    ready = await api.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["stranded_workflows"] == 1
    # Retried at least twice, said once.
    [line] = worker_lines(caplog, entry["run_id"])
    assert line["workflow_id"] == entry["workflow_id"]
    assert line["workflow_type"] == workflow_type
    assert line["level"] == "error"
    return line


async def test_an_exception_in_workflow_code_is_reported_within_a_minute(
    api: Api,
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
):
    async with running_worker(client, settings, sessionmaker, [BuggyWorkflow]):
        handle = await start(client, BuggyWorkflow, settings)
        try:
            await eventually(lambda: waiting_for_poke(handle), what="the first task")
            assert await listed(api, handle.id) is None  # a healthy workflow is not listed
            poked = datetime.now(UTC)
            await handle.signal(POKE)

            entry = await reported(api, handle, attempts=3)

            assert entry["workflow_type"] == "StrandingBuggy"
            assert entry["category"] == "WorkflowTaskFailed"
            assert entry["cause"] == "WorkflowTaskFailedCauseWorkflowWorkerUnhandledFailure"
            assert entry["message"] == "order total is not a number: 'abc'"
            assert (
                poked - timedelta(seconds=5)
                < datetime.fromisoformat(entry["since"])
                < poked + timedelta(seconds=30)
            )
            assert entry["run_id"] == handle.result_run_id
            assert entry["temporal_ui_url"].endswith(
                f"/namespaces/default/workflows/stranding%2F{handle.id.split('/')[1]}"
                f"/{entry['run_id']}/history"
            )
            line = await assert_reported_everywhere(api, caplog, entry, "StrandingBuggy")
            assert line["kind"] == "exception"
            assert line["error"] == "RuntimeError"
            assert line["failure"] == "order total is not a number: 'abc'"
            # The SDK's own warning, a traceback per retry, does not reach the log.
            assert not [r for r in caplog.records if "Failed activation" in r.getMessage()]
        finally:
            await handle.terminate()


async def test_a_nondeterminism_error_on_replay_is_reported_within_a_minute(
    api: Api,
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
):
    async with running_worker(client, settings, sessionmaker, [RecordedWorkflow]):
        handle = await start(client, RecordedWorkflow, settings)
        await eventually(lambda: waiting_for_poke(handle), what="the timer and the wait")
    try:
        # A deploy of the changed code: a new worker replays the run from its history.
        async with running_worker(client, settings, sessionmaker, [ChangedWorkflow]):
            await handle.signal(POKE)

            entry = await reported(api, handle, attempts=2)

            assert entry["workflow_type"] == "StrandingChanged"
            assert entry["cause"] == "WorkflowTaskFailedCauseNonDeterministicError"
            assert "Nondeterminism error" in entry["message"]
            assert "TimerStarted" in entry["message"]
            line = await assert_reported_everywhere(api, caplog, entry, "StrandingChanged")
            assert line["kind"] == "nondeterminism"
            assert line["error"] == "NonDeterministicError"
            assert "TimerStarted" in line["failure"]
    finally:
        await handle.terminate()


async def test_the_listing_needs_the_ops_scope(api: Api):
    response = await api.get("/v1/ops/stranded-workflows", key="sutra_not_a_key")
    assert response.status_code == 401

    created = await api.http.post(
        "/v1/api-keys",
        json={"name": "marketing", "scopes": ["rules:read"]},
        headers=auth(ADMIN_KEY),
    )
    response = await api.get("/v1/ops/stranded-workflows", key=created.json()["key"])
    assert response.status_code == 403
    assert (await api.get("/v1/ops/stranded-workflows?limit=0")).status_code == 422
