"""GET /v1/ops/stranded-workflows: running workflows whose workflow tasks keep failing."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from temporalio.service import RPCError

from api.deps import SettingsDep, TemporalDep, require
from api.errors import documented
from contracts.errors import ServiceUnavailable
from services.platform import stranded
from services.platform.api_keys import Principal
from services.platform.temporal import task_queues, ui_url

router = APIRouter(prefix="/v1/ops", tags=["operations"])


class StrandedWorkflowView(BaseModel):
    workflow_id: str
    run_id: str
    workflow_type: str
    since: datetime | None = Field(
        description="The first failed workflow task since the last one that completed"
    )
    attempts: int = Field(description="The pending workflow task's attempt, as Temporal counts")
    category: str = Field(description="WorkflowTaskFailed or WorkflowTaskTimedOut")
    cause: str = Field(description="e.g. WorkflowTaskFailedCauseNonDeterministicError")
    message: str = Field(description="What the most recent recorded failure said")
    temporal_ui_url: str


class StrandedWorkflows(BaseModel):
    task_queue: str
    count: int = Field(description="All stranded workflows, also those past `limit`")
    workflows: list[StrandedWorkflowView]


@router.get(
    "/stranded-workflows",
    summary="Workflows whose workflow tasks keep failing",
    description=(
        "Running workflows on this deployment's task queue that Temporal reports as failing "
        "their workflow tasks again and again (`TemporalReportedProblems`): a nondeterminism "
        "error after a deploy, an exception in workflow code. Temporal retries them forever; "
        "they move again once the code is fixed (or the workflow is reset or terminated)."
    ),
    responses=documented(401, 403, 422, 503),
)
async def list_stranded_workflows(
    settings: SettingsDep,
    temporal: TemporalDep,
    _: Annotated[Principal, Depends(require("ops"))],
    limit: Annotated[int, Query(ge=1, le=1000, description="How many to describe")] = 100,
) -> StrandedWorkflows:
    queue = settings.temporal_task_queue
    queues = task_queues(settings)
    try:
        total = await stranded.count(temporal, queues)
        found = await stranded.list_stranded(temporal, queues, limit=limit) if total else []
    except RPCError as exc:
        raise ServiceUnavailable(f"Temporal did not answer: {exc.message}") from exc
    return StrandedWorkflows(
        task_queue=queue,
        count=max(total, len(found)),
        workflows=[
            StrandedWorkflowView(
                workflow_id=w.workflow_id,
                run_id=w.run_id,
                workflow_type=w.workflow_type,
                since=w.since,
                attempts=w.attempts,
                category=w.category,
                cause=w.cause,
                message=w.message,
                temporal_ui_url=ui_url(settings, temporal.namespace, w.workflow_id, w.run_id),
            )
            for w in found
        ],
    )
