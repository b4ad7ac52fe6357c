"""Reading a workflow's live state over the API: one query, one mapping of its failures."""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from contracts.errors import NotFound, ServiceUnavailable
from contracts.names import STATE_QUERY

T = TypeVar("T")


async def query_state(
    temporal: Client,
    workflow_id: str,
    result_type: type[T],
    *,
    what: str,
    key: str,
    rpc_timeout: timedelta = timedelta(seconds=5),
) -> T:
    """The ``state`` query of ``workflow_id``; 404 when there is no such workflow, 503 when
    Temporal or the workflow cannot answer. ``what``/``key`` name it in errors."""
    handle = temporal.get_workflow_handle(workflow_id)
    try:
        return await handle.query(STATE_QUERY, result_type=result_type, rpc_timeout=rpc_timeout)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NotFound(f"no {what} workflow for {what} {key!r}") from exc
        raise ServiceUnavailable(f"Temporal did not answer: {exc.message}") from exc
    except WorkflowQueryFailedError as exc:
        raise ServiceUnavailable(f"the {what} workflow could not answer: {exc}") from exc
