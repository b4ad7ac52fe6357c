"""How errors reach clients: every 4xx/5xx body is ``{"error", "detail"}`` (+ ``fields`` for
validation). The errors themselves (``SutraError`` and its kinds) live in contracts/errors.py,
below the API, so services raise them directly; this module only renders them and the
framework's own (validation, routing, database) errors in the same shape."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.errors import SutraError
from contracts.events import EVENT_TYPES

log = logging.getLogger(__name__)


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str


class ErrorBody(BaseModel):
    error: str
    detail: str
    fields: list[FieldError] | None = None


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error codes a route can return."""
    return {code: {"model": ErrorBody} for code in codes}


def error_response(
    status: int,
    error: str,
    detail: str,
    *,
    fields: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"error": error, "detail": detail, **extra}
    if fields is not None:
        body["fields"] = fields
    return JSONResponse(body, status_code=status, headers=headers)


def field_errors(errors: Sequence[Any], *, strip: int = 0) -> list[dict[str, Any]]:
    """Pydantic errors as ``{"loc", "msg"}``, without the union tag pydantic puts in ``loc``.

    ``strip`` drops that many leading loc parts (e.g. "body" for a batch item).
    """
    out = []
    for err in errors:
        loc = list(err.get("loc", ()))[strip:]
        # A discriminated union reports ("cart.updated", "data", ...): the tag is noise.
        loc = [
            p for i, p in enumerate(loc) if not (isinstance(p, str) and p in EVENT_TYPES and i <= 1)
        ]
        # Keyed unions (rule steps, conditions) repeat the key as a tag: {"send": {...}}
        # errs at ("send", "send", "channels"); say it once.
        loc = [p for i, p in enumerate(loc) if i + 1 >= len(loc) or loc[i + 1] != p]
        kind = err.get("type")
        msg = str(err.get("msg", "invalid"))
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            loc = [*loc, "type"]
            got = (err.get("ctx") or {}).get("tag")
            msg = (
                f"unknown event type {got!r}; expected one of: " + ", ".join(EVENT_TYPES)
                if got
                else "event type is missing; expected one of: " + ", ".join(EVENT_TYPES)
            )
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        out.append({"loc": loc, "msg": msg})
    return out


def summarize(fields: list[dict[str, Any]]) -> str:
    first = fields[0]
    where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
    more = f" (and {len(fields) - 1} more)" if len(fields) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def install(app: FastAPI) -> None:
    @app.exception_handler(SutraError)
    async def _sutra(_: Request, exc: SutraError) -> JSONResponse:
        return error_response(
            exc.status, exc.code, exc.detail, fields=exc.fields, headers=exc.headers, **exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            err = next(e for e in errors if e.get("type") == "json_invalid")
            reason = (err.get("ctx") or {}).get("error", "invalid JSON")
            return error_response(
                400,
                "malformed_json",
                f"request body is not valid JSON: {reason}",
                fields=[{"loc": [str(p) for p in err.get("loc", ())], "msg": str(reason)}],
            )
        fields = field_errors(errors)
        return error_response(422, "validation_error", summarize(fields), fields=fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        return error_response(
            exc.status_code,
            codes.get(exc.status_code, "http_error"),
            str(exc.detail),
            headers=getattr(exc, "headers", None),
        )

    async def _db_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", getattr(exc, "orig", None) or exc)
        return database_unavailable()

    # Connection refused, dropped mid-query, pool exhausted while the database is away: the
    # request can succeed if retried shortly, so 503 with Retry-After, never a 500.
    for kind in (OperationalError, InterfaceError, PoolTimeout, psycopg.OperationalError):
        app.add_exception_handler(kind, _db_down)

    @app.exception_handler(DataError)
    async def _unstorable(_: Request, exc: DataError) -> JSONResponse:
        # A value from the request the database cannot hold or compare (U+0000 in text, an
        # integer beyond its column): the client's to fix, so 422, not 500.
        log.info("unstorable value: %s", exc.orig)
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else "invalid value"
        return error_response(422, "validation_error", f"a value cannot be stored: {reason}")

    @app.exception_handler(DBAPIError)
    async def _db_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return await _db_down(request, exc)
        return await _unexpected(request, exc)

    @app.exception_handler(RuntimeError)
    async def _runtime(request: Request, exc: RuntimeError) -> JSONResponse:
        # The API's Temporal client connects lazily (it starts while Temporal is down); until
        # it has connected once, every call raises this instead of an RPCError.
        if str(exc).startswith(TEMPORAL_CONNECT_FAILED):
            log.warning("Temporal unavailable: %s", exc)
            return error_response(
                503,
                "service_unavailable",
                "Temporal did not answer: it is not reachable; retry shortly",
                headers={"Retry-After": str(DB_RETRY_AFTER_SECONDS)},
            )
        return await _unexpected(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "an unexpected error occurred")


DB_RETRY_AFTER_SECONDS = 5
# What temporalio's lazy client raises (a plain RuntimeError) while it cannot connect.
TEMPORAL_CONNECT_FAILED = "Failed client connect"


def database_unavailable() -> JSONResponse:
    """What every request that needs the database gets while it is unreachable."""
    return error_response(
        503,
        "database_unavailable",
        "the database is not reachable; retry shortly",
        headers={"Retry-After": str(DB_RETRY_AFTER_SECONDS)},
    )
