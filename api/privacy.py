"""A customer's data on request: ``GET /v1/customers/{id}/export`` (everything Sutra keeps
about them) and ``DELETE /v1/customers/{id}`` (erase their personal data, end their
journeys). What is erased and what survives for analytics: services/customers/privacy.py."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from temporalio.service import RPCError

from api.deps import SessionDep, SettingsDep, TemporalDep, require
from api.errors import documented
from contracts.errors import NotFound, ServiceUnavailable
from services.customers import privacy
from services.platform import audit
from services.platform.api_keys import Principal

log = logging.getLogger("sutra.privacy")

Ops = Annotated[Principal, Depends(require("ops"))]

router = APIRouter(prefix="/v1/customers", tags=["customers"])


class ErasureOut(BaseModel):
    customer_id: str
    erased_at: str
    counts: dict[str, int] = Field(description="Rows overwritten or removed, per kind")
    journeys_terminated: list[str] = Field(
        description="Workflow ids of the running cart and lifecycle journeys ended"
    )


@router.get(
    "/{customer_id}/export",
    summary="Everything Sutra stores about a customer, as JSON",
    responses=documented(401, 403, 404),
)
async def export_customer(customer_id: str, session: SessionDep, _: Ops) -> JSONResponse:
    data: dict[str, Any] | None = await privacy.export(session, customer_id)
    if data is None:
        raise NotFound(f"no customer with id {customer_id!r}")
    return JSONResponse(
        data,
        headers={"Content-Disposition": f'attachment; filename="customer-{customer_id}.json"'},
    )


@router.delete(
    "/{customer_id}",
    summary="Erase a customer's personal data and end their journeys",
    description="Personal data is removed or overwritten in one transaction; anonymised "
    "analytics (message counts, attributed revenue, variants) remain. Their running cart "
    "and lifecycle journeys are then terminated (orders go on). Safe to repeat: a 503 "
    "means the data is erased but some journeys could not be ended yet.",
    responses=documented(401, 403, 404, 503),
)
async def erase_customer(
    customer_id: str,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    principal: Ops,
) -> ErasureOut:
    erasure = await privacy.erase(
        session, customer_id, secret=settings.secret_key.get_secret_value()
    )
    if erasure is None:
        raise NotFound(f"no customer with id {customer_id!r}")
    audit.record(session, principal, "customer", customer_id, "erase", privacy.summary(erasure))
    await session.commit()  # erased, whatever Temporal says next
    try:
        erasure.journeys_terminated = await privacy.end_journeys(temporal, customer_id)
    except RPCError as exc:
        log.warning("customer %s erased; ending journeys failed: %s", customer_id, exc.message)
        raise ServiceUnavailable(
            f"personal data erased, but Temporal did not end the journeys ({exc.message}); "
            "repeat the request"
        ) from exc
    if erasure.journeys_terminated:
        audit.record(
            session,
            principal,
            "customer",
            customer_id,
            "erase.journeys_ended",
            {"workflow_ids": erasure.journeys_terminated},
        )
    log.info(
        "customer erased",
        extra={
            "customer_id": customer_id,
            "by": principal.name,
            "key_id": str(principal.key_id),
            "counts": erasure.counts,
            "journeys_terminated": len(erasure.journeys_terminated),
        },
    )
    return ErasureOut(**privacy.summary(erasure))
