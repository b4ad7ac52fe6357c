"""GET /v1/carts/{cart_id}: a cart's live state, answered by its workflow."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from api.deps import TemporalDep, require
from api.errors import documented
from api.workflow_state import query_state
from contracts import workflow_ids
from contracts.carts import CartState
from services.platform.api_keys import Principal

router = APIRouter(prefix="/v1/carts", tags=["carts"])


@router.get(
    "/{cart_id}",
    summary="A cart's state from its workflow",
    responses=documented(401, 403, 404, 503),
)
async def get_cart(
    cart_id: str, temporal: TemporalDep, _: Annotated[Principal, Depends(require("ops"))]
) -> CartState:
    return await query_state(
        temporal, workflow_ids.cart(cart_id), CartState, what="cart", key=cart_id
    )
