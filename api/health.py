"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

router = APIRouter(tags=["operations"])
_CHECK_TIMEOUT = 2.0


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _database(request: Request) -> None:
    async with request.app.state.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _temporal(request: Request) -> None:
    await request.app.state.temporal.workflow_service.get_system_info(
        GetSystemInfoRequest(), timeout=timedelta(seconds=_CHECK_TIMEOUT)
    )


@router.get(
    "/readyz",
    summary="The database and Temporal are reachable",
    responses={503: {"description": "Something this service needs is down"}},
)
async def readyz(request: Request) -> JSONResponse:
    checks: dict[str, Any] = {}
    for name, probe in (("database", _database), ("temporal", _temporal)):
        try:
            await asyncio.wait_for(probe(request), _CHECK_TIMEOUT)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"unavailable: {type(exc).__name__}: {exc}"[:300]
    dispatcher = getattr(request.app.state, "dispatcher", None)
    checks["dispatcher"] = (
        "leader" if dispatcher and dispatcher.is_leader else "standby" if dispatcher else "off"
    )
    # Stranded workflows are reported, never a reason to take the API out of rotation.
    monitor = getattr(request.app.state, "stranded", None)
    stranded = {"stranded_workflows": monitor.count if monitor else None}
    down = [name for name in ("database", "temporal") if checks[name] != "ok"]
    if down:
        return JSONResponse(
            {
                "error": "not_ready",
                "detail": f"unavailable: {', '.join(down)}",
                "checks": checks,
                **stranded,
            },
            status_code=503,
        )
    return JSONResponse({"status": "ready", "checks": checks, **stranded})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics_endpoint() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
