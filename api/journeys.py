"""Ops steering one journey: POST /v1/journeys/{workflow_id}/pause, /resume, /end
(services/journeys/controls.py says what each does). Workflow ids hold slashes
(``cart/cart_9``, ``journey/r_1/c_1``): they go into the path as they are."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from api.deps import SessionDep, SettingsDep, TemporalDep, require
from api.errors import documented
from services.journeys import controls
from services.platform import audit
from services.platform.api_keys import Principal
from services.platform.temporal import ui_url

router = APIRouter(prefix="/v1/journeys", tags=["journeys"])
Ops = Annotated[Principal, Depends(require("ops"))]


class JourneyControlOut(BaseModel):
    workflow_id: str
    run_id: str
    workflow_type: str = Field(description="CartWorkflow or LifecycleJourney")
    action: Literal["pause", "resume", "end"]
    status: Literal["running", "paused", "ended"] = Field(
        description="The journey's state once the request took effect"
    )
    exit_reason: str | None = Field(description="ended_by_ops once ended here")
    temporal_ui_url: str


_DESCRIPTIONS = {
    "pause": (
        "Nothing goes out until resumed. Waits keep their clock: a step that falls due "
        "while paused goes out on resume. Pausing a paused journey answers the same."
    ),
    "resume": "Steps go on where they were held; a step that fell due goes out at once.",
    "end": (
        "The journey exits with `ended_by_ops` on its entry and sends nothing more; a "
        "cart's workflow goes on remembering the cart. Ending it again answers the same."
    ),
}


async def _control(
    action: Literal["pause", "resume", "end"],
    workflow_id: str,
    temporal: TemporalDep,
    session: SessionDep,
    settings: SettingsDep,
    principal: Principal,
) -> JourneyControlOut:
    done = await controls.control(
        temporal,
        workflow_id,
        action,
        by=principal.name,
        rpc_timeout=settings.order_update_timeout,
    )
    audit.record(
        session,
        principal,
        "journey",
        workflow_id,
        action,
        {"run_id": done.run_id, "status": done.result.status},
    )
    return JourneyControlOut(
        workflow_id=workflow_id,
        run_id=done.run_id,
        workflow_type=done.workflow_type,
        action=action,
        status=done.result.status,
        exit_reason=done.result.exit_reason,
        temporal_ui_url=ui_url(settings, temporal.namespace, workflow_id, done.run_id),
    )


_RESPONSES = documented(401, 403, 404, 409, 503)


@router.post(
    "/{workflow_id:path}/pause",
    summary="Pause one journey",
    description=_DESCRIPTIONS["pause"],
    responses=_RESPONSES,
)
async def pause_journey(
    workflow_id: str,
    temporal: TemporalDep,
    session: SessionDep,
    settings: SettingsDep,
    principal: Ops,
) -> JourneyControlOut:
    return await _control("pause", workflow_id, temporal, session, settings, principal)


@router.post(
    "/{workflow_id:path}/resume",
    summary="Resume a paused journey",
    description=_DESCRIPTIONS["resume"],
    responses=_RESPONSES,
)
async def resume_journey(
    workflow_id: str,
    temporal: TemporalDep,
    session: SessionDep,
    settings: SettingsDep,
    principal: Ops,
) -> JourneyControlOut:
    return await _control("resume", workflow_id, temporal, session, settings, principal)


@router.post(
    "/{workflow_id:path}/end",
    summary="End one journey (exit reason ended_by_ops)",
    description=_DESCRIPTIONS["end"],
    responses=_RESPONSES,
)
async def end_journey(
    workflow_id: str,
    temporal: TemporalDep,
    session: SessionDep,
    settings: SettingsDep,
    principal: Ops,
) -> JourneyControlOut:
    return await _control("end", workflow_id, temporal, session, settings, principal)
