"""GET /v1/carts/{cart_id}: a cart's live state, answered by its workflow."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import TemporalDep, require
from api.errors import NotFound, ServiceUnavailable, documented
from contracts import workflow_ids
from contracts.carts import CartState
from services.api_keys import Principal

router = APIRouter(prefix="/v1/carts", tags=["carts"])


@router.get(
    "/{cart_id}",
    summary="A cart's state from its workflow",
    responses=documented(401, 403, 404, 503),
)
async def get_cart(
    cart_id: str, temporal: TemporalDep, _: Annotated[Principal, Depends(require("ops"))]
) -> CartState:
    handle = temporal.get_workflow_handle(workflow_ids.cart(cart_id))
    try:
        return await handle.query("state", result_type=CartState, rpc_timeout=timedelta(seconds=5))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NotFound(f"no cart workflow for cart {cart_id!r}") from exc
        raise ServiceUnavailable(f"Temporal did not answer: {exc.message}") from exc
    except WorkflowQueryFailedError as exc:
        raise ServiceUnavailable(f"the cart workflow could not answer: {exc}") from exc
