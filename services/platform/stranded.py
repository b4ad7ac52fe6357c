"""Stranded workflows: running workflows whose workflow tasks keep failing.

Temporal retries a failing workflow task forever (a Python exception in workflow code, a
nondeterminism error on replay), so such a workflow is stuck, and nothing says so unless
someone looks. Temporal Server 1.28+ says so itself: after
``system.numConsecutiveWorkflowTaskProblemsToTriggerSearchAttribute`` consecutive failed or
timed-out workflow tasks (default 5) it sets the system search attribute
``TemporalReportedProblems`` on the workflow, e.g. ``["category=WorkflowTaskFailed",
"cause=WorkflowTaskFailedCauseNonDeterministicError"]``, and clears it with the next
completed task. One visibility query therefore finds every stranded workflow, at any
number of running ones; each found one is then described and its history read from the
end for when the failures began and what the last one said. The attribute outlives the
workflow's closing, hence the status filter. Every query Sutra makes about this is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import FailureError
from temporalio.service import RPCError, RPCStatusCode

from config.settings import Settings
from contracts.search_attributes import equals
from services.platform import metrics
from services.platform.temporal import task_queues

log = logging.getLogger(__name__)

REPORTED_PROBLEMS = SearchAttributeKey.for_keyword_list("TemporalReportedProblems")
_TASK_QUEUE = SearchAttributeKey.for_keyword("TaskQueue")

# The dev servers (`make run`, the tests) report a workflow after two consecutive problems
# instead of five: the first failure is reported at once, the second is the retry's
# timeout (the workflow task timeout, 10 s by default; the SDK does not report a retry
# that fails the same way), so a stranded workflow shows within seconds, not a minute.
PROBLEMS_BEFORE_REPORT = 2
DEV_SERVER_ARGS = (
    "--dynamic-config-value",
    f"system.numConsecutiveWorkflowTaskProblemsToTriggerSearchAttribute={PROBLEMS_BEFORE_REPORT}",
)

_RPC_TIMEOUT = timedelta(seconds=5)
_HISTORY_PAGES = 5  # how far back (x100 events) to look for where the failures began
_CONCURRENCY = 8
_COUNT_CAP = 10_000


def stranded_query(task_queues: Sequence[str]) -> str:
    """The visibility query for the stranded workflows of these task queues."""
    queues = " OR ".join(equals(_TASK_QUEUE, queue) for queue in task_queues)
    return f'{REPORTED_PROBLEMS.name} IS NOT NULL AND ExecutionStatus = "Running" AND ({queues})'


@dataclass(frozen=True)
class StrandedWorkflow:
    workflow_id: str
    run_id: str
    workflow_type: str
    category: str  # WorkflowTaskFailed or WorkflowTaskTimedOut, as Temporal reports it
    cause: str  # e.g. WorkflowTaskFailedCauseNonDeterministicError
    since: datetime | None  # the first failure since the last completed workflow task
    attempts: int  # the pending workflow task's attempt, as Temporal counts it
    message: str  # what the most recent recorded failure said


def _problem(values: Sequence[str], name: str) -> str:
    prefix = f"{name}="
    return next((v[len(prefix) :] for v in values if v.startswith(prefix)), "")


async def count(client: Client, task_queues: Sequence[str]) -> int:
    result = await client.count_workflows(stranded_query(task_queues), rpc_timeout=_RPC_TIMEOUT)
    return result.count


async def count_by_type(client: Client, task_queues: Sequence[str]) -> Counter[str]:
    """Stranded workflows by workflow type (visibility cannot group by type itself)."""
    counts: Counter[str] = Counter()
    async for execution in client.list_workflows(
        stranded_query(task_queues), page_size=1000, limit=_COUNT_CAP, rpc_timeout=_RPC_TIMEOUT
    ):
        counts[execution.workflow_type] += 1
    return counts


async def list_stranded(
    client: Client, task_queues: Sequence[str], *, limit: int
) -> list[StrandedWorkflow]:
    """Up to ``limit`` stranded workflows with their failures; a workflow that recovered
    between the query and its description is left out."""
    found = [
        execution
        async for execution in client.list_workflows(
            stranded_query(task_queues),
            page_size=min(limit, 1000),
            limit=limit,
            rpc_timeout=_RPC_TIMEOUT,
        )
    ]
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def explain(workflow_id: str, run_id: str) -> StrandedWorkflow | None:
        async with gate:
            try:
                return await _explain(client, workflow_id, run_id)
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:  # deleted meanwhile
                    return None
                raise

    explained = await asyncio.gather(*(explain(e.id, e.run_id) for e in found))
    return [workflow for workflow in explained if workflow is not None]


async def _explain(client: Client, workflow_id: str, run_id: str) -> StrandedWorkflow | None:
    description = await client.get_workflow_handle(workflow_id, run_id=run_id).describe(
        rpc_timeout=_RPC_TIMEOUT
    )
    problems = description.typed_search_attributes.get(REPORTED_PROBLEMS)
    if not problems:
        return None
    first, last = await _failures(client, workflow_id, run_id)
    return StrandedWorkflow(
        workflow_id=workflow_id,
        run_id=run_id,
        workflow_type=description.workflow_type,
        category=_problem(problems, "category"),
        cause=_problem(problems, "cause"),
        since=first.event_time.ToDatetime(tzinfo=UTC) if first else None,
        attempts=description.raw_description.pending_workflow_task.attempt,
        message=await _message(client, last) if last else "",
    )


async def _failures(
    client: Client, workflow_id: str, run_id: str
) -> tuple[HistoryEvent | None, HistoryEvent | None]:
    """The first and the last failed or timed-out workflow task since the last completed
    one. Temporal records only a streak's first failure (retries failing the same way are
    transient), plus one more each time a signal or update starts a fresh task."""
    failures = {
        EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
    }
    first: HistoryEvent | None = None
    last: HistoryEvent | None = None
    token = b""
    for _ in range(_HISTORY_PAGES):
        page = await client.workflow_service.get_workflow_execution_history_reverse(
            GetWorkflowExecutionHistoryReverseRequest(
                namespace=client.namespace,
                execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
                maximum_page_size=100,
                next_page_token=token,
            ),
            timeout=_RPC_TIMEOUT,
        )
        for event in page.history.events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                return first, last
            if event.event_type in failures:
                first = event
                last = last or event
        token = page.next_page_token
        if not token:
            break
    return first, last


async def _message(client: Client, event: HistoryEvent) -> str:
    if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
        kind = TimeoutType.Name(event.workflow_task_timed_out_event_attributes.timeout_type)
        return f"workflow task timed out ({kind.removeprefix('TIMEOUT_TYPE_').lower()})"
    failure = Failure()
    failure.CopyFrom(event.workflow_task_failed_event_attributes.failure)
    try:
        # With payload encryption on, workflow code's failure messages are encrypted too.
        decoded = await client.data_converter.decode_failure(failure)
    except Exception:
        return event.workflow_task_failed_event_attributes.failure.message
    return decoded.message if isinstance(decoded, FailureError) else str(decoded)


class StrandedMonitor:
    """Counts the stranded workflows of this deployment's task queue every
    ``SUTRA_STRANDED_CHECK_EVERY`` into the ``sutra_stranded_workflows`` gauge. Each API
    process runs one: the count is the same from each (take the max across processes)."""

    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.client = client
        self.count: int | None = None  # None until the first check succeeds
        self._types: set[str] = set()
        self._failing = False

    async def check(self) -> int:
        counts = await count_by_type(self.client, task_queues(self.settings))
        # A type that had stranded workflows reads 0 afterwards rather than vanishing.
        self._types |= set(counts)
        for workflow_type in self._types:
            metrics.STRANDED.labels(workflow_type).set(counts[workflow_type])
        metrics.STRANDED_CHECKED.set(time.time())
        self.count = sum(counts.values())
        return self.count

    async def run(self) -> None:
        interval = self.settings.stranded_check_every.total_seconds()
        while True:
            try:
                before = self.count
                found = await self.check()
                if self._failing:
                    log.info("counting stranded workflows again")
                self._failing = False
                if found and found != before:  # said once per change, not every check
                    log.warning(
                        "%d workflow(s) on task queues %r keep failing their workflow tasks: "
                        "GET /v1/ops/stranded-workflows lists them",
                        found,
                        task_queues(self.settings),
                    )
            except Exception as exc:  # Temporal down or slow: /readyz reports that
                if not self._failing:
                    log.warning("could not count stranded workflows: %s", exc)
                self._failing = True
            await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def monitoring(monitor: StrandedMonitor) -> AsyncIterator[StrandedMonitor]:
    task = asyncio.create_task(monitor.run(), name="sutra-stranded-monitor")
    try:
        yield monitor
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
