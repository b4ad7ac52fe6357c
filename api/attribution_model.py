"""The attribution model: its per-channel windows (analytics:read), and changing them
(admin), which recomputes the credit of past orders and is audited with its date."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from api.deps import SessionDep, SettingsDep, require
from api.errors import documented
from contracts.attribution import Windows
from contracts.errors import Unprocessable
from services.analytics.period import shop_zone
from services.journeys import attribution_model
from services.platform.api_keys import Principal

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])
Reader = Annotated[Principal, Depends(require("analytics:read"))]
Admin = Annotated[Principal, Depends(require("admin"))]


class ModelOut(BaseModel):
    model: str = Field(
        default="last_touch", description="Last touch: click > open > delivery > send"
    )
    windows: dict[str, timedelta] = Field(description="Per channel, ISO 8601 durations")
    source: str = Field(description="settings (SUTRA_ATTRIBUTION_WINDOWS) | api")
    changed_at: datetime | None
    changed_by: str | None


class Recompute(BaseModel):
    model_config = {"populate_by_name": True}

    start: date | None = Field(
        default=None, alias="from", description="Orders placed from this day (shop's zone)"
    )
    end: date | None = Field(
        default=None, alias="to", description="Orders placed up to this day, included"
    )


class ModelIn(BaseModel):
    model_config = {"extra": "forbid"}

    windows: Windows = Field(
        description="Per channel; a channel left out has no window (never credited)",
        min_length=1,
    )
    recompute: Recompute = Field(
        default_factory=Recompute,
        description="Which past orders are credited again; both bounds left out: all",
    )


class RecomputedOut(BaseModel):
    orders: int = Field(description="Orders whose credit was decided again")
    moved: int = Field(description="Of those, credited to a different message (or none)")


class ChangedOut(ModelOut):
    recomputed: RecomputedOut


def _out(model: attribution_model.Model) -> ModelOut:
    return ModelOut(
        windows=model.windows,
        source="settings" if model.changed_at is None else "api",
        changed_at=model.changed_at,
        changed_by=model.changed_by,
    )


@router.get(
    "/attribution-model",
    summary="The attribution model in force and when it last changed",
    responses=documented(401, 403),
)
async def get_model(session: SessionDep, settings: SettingsDep, _: Reader) -> ModelOut:
    return _out(await attribution_model.current(session, settings))


@router.put(
    "/attribution-model",
    summary="Change the windows and recompute past orders' credit (audited)",
    responses=documented(401, 403, 422),
)
async def put_model(
    body: ModelIn, session: SessionDep, settings: SettingsDep, principal: Admin
) -> ChangedOut:
    zone = shop_zone(settings)
    start, end = body.recompute.start, body.recompute.end
    if start is not None and end is not None and start > end:
        raise Unprocessable(
            "recompute.from is after recompute.to",
            fields=[{"loc": ["body", "recompute", "from"], "msg": "must not be after to"}],
        )
    model, done = await attribution_model.change(
        session,
        settings,
        dict(body.windows),
        principal,
        datetime.now(UTC),
        datetime.combine(start, time(), zone) if start else None,
        datetime.combine(end + timedelta(days=1), time(), zone) if end else None,
    )
    return ChangedOut(
        **_out(model).model_dump(),
        recomputed=RecomputedOut(orders=done.orders, moved=done.moved),
    )
