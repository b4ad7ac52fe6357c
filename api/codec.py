"""Temporal's codec server protocol: the Temporal UI and CLI send encrypted payloads here
and show authorised ops the customer data inside.

``POST /codec/decode`` and ``POST /codec/encode`` take and return
``temporal.api.common.v1.Payloads`` as protobuf JSON
(``{"payloads": [{"metadata": {"encoding": "<base64>"}, "data": "<base64>"}]}``), for the
namespace in ``X-Namespace``. They need the ``ops`` scope: ``Authorization: Bearer <key>``
(the CLI: ``temporal workflow show --codec-endpoint http://…/codec --codec-auth 'Bearer …'``).

A browser UI calls from another origin: only ``SUTRA_TEMPORAL_UI_ORIGIN`` gets CORS
headers. The development UI (``make run``) cannot send an Authorization header, so outside
production the key may instead be a path segment: ``/codec/k/<ops key>/decode``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from api.deps import SessionDep, SettingsDep, require
from api.errors import documented
from config.settings import Settings
from contracts.errors import BadRequest, Forbidden, NotFound, SutraError, Unauthorized
from services.platform.api_keys import Principal, authenticate
from services.platform.payload_codec import EncryptionCodec, PayloadKeyError

router = APIRouter(prefix="/codec", tags=["operations"])

Direction = Literal["decode", "encode"]
_ALLOW_HEADERS = "content-type, x-namespace, authorization"
_MAX_AGE = "600"


class UndecryptablePayload(SutraError):
    status, code = 422, "undecryptable_payload"


def allowed_origins(settings: Settings) -> frozenset[str]:
    return frozenset(
        o.strip().rstrip("/") for o in settings.temporal_ui_origin.split(",") if o.strip()
    )


def _cors(request: Request, settings: Settings) -> dict[str, str]:
    origin = request.headers.get("origin")
    if origin is None or origin.rstrip("/") not in allowed_origins(settings):
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


@lru_cache(maxsize=4)
def _codec(spec: str) -> EncryptionCodec:
    return EncryptionCodec.from_spec(spec)


async def _convert(
    direction: Direction, request: Request, settings: Settings, namespace: str | None
) -> Response:
    if namespace and namespace != settings.temporal_namespace:
        raise BadRequest(
            f"this codec serves namespace {settings.temporal_namespace!r}, not {namespace!r}"
        )
    body = await request.body()
    payloads = Payloads()
    try:
        json_format.Parse(body or b"{}", payloads)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        # ValueError covers bytes that are not UTF-8.
        raise BadRequest(f"body is not a Payloads JSON document: {exc}") from None
    if settings.payload_keys is not None:
        codec = _codec(settings.payload_keys.get_secret_value())
        try:
            converted = await (codec.decode if direction == "decode" else codec.encode)(
                payloads.payloads
            )
        except PayloadKeyError as exc:
            raise UndecryptablePayload(str(exc)) from None
        payloads = Payloads(payloads=converted)
    # No keys configured: nothing Sutra wrote is encrypted; payloads pass through unchanged.
    return Response(
        json_format.MessageToJson(payloads),
        media_type="application/json",
        headers=_cors(request, settings),
    )


_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "temporal.api.common.v1.Payloads as protobuf JSON",
                    "properties": {
                        "payloads": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "metadata": {
                                        "type": "object",
                                        "additionalProperties": {
                                            "type": "string",
                                            "format": "byte",
                                        },
                                    },
                                    "data": {"type": "string", "format": "byte"},
                                },
                            },
                        }
                    },
                }
            }
        },
    }
}
_NAMESPACE = Header(alias="X-Namespace", description="The payloads' Temporal namespace")


@router.post(
    "/decode",
    summary="Decrypt Temporal payloads (codec server protocol)",
    openapi_extra=_BODY,
    responses=documented(400, 401, 403, 422),
)
async def decode(
    request: Request,
    settings: SettingsDep,
    _: Annotated[Principal, Depends(require("ops"))],
    namespace: Annotated[str | None, _NAMESPACE] = None,
) -> Response:
    return await _convert("decode", request, settings, namespace)


@router.post(
    "/encode",
    summary="Encrypt Temporal payloads (codec server protocol)",
    openapi_extra=_BODY,
    responses=documented(400, 401, 403, 422),
)
async def encode(
    request: Request,
    settings: SettingsDep,
    _: Annotated[Principal, Depends(require("ops"))],
    namespace: Annotated[str | None, _NAMESPACE] = None,
) -> Response:
    return await _convert("encode", request, settings, namespace)


async def _path_key(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    key: Annotated[str, Path(description="An API key with the ops scope")],
) -> Principal:
    if settings.is_production:
        # A key in a URL ends up in access logs and browser settings: development only.
        raise NotFound("key-in-path codec URLs are disabled in production; use /codec/decode")
    principal = await authenticate(session, key, request.app.state.key_cache)
    if principal is None:
        raise Unauthorized("invalid or revoked API key")
    if not principal.allows("ops"):
        raise Forbidden("this API key lacks the 'ops' scope", required_scope="ops")
    return principal


@router.post(
    "/k/{key}/{direction}",
    summary="The codec for a UI that cannot send Authorization (development only)",
    openapi_extra=_BODY,
    responses=documented(400, 401, 403, 404, 422),
)
async def convert_with_path_key(
    direction: Direction,
    request: Request,
    settings: SettingsDep,
    _: Annotated[Principal, Depends(_path_key)],
    namespace: Annotated[str | None, _NAMESPACE] = None,
) -> Response:
    return await _convert(direction, request, settings, namespace)


def _preflight(request: Request, settings: Settings) -> Response:
    headers = _cors(request, settings)
    if not headers:
        # Not the Temporal UI: no CORS grant, so the browser refuses the real request.
        return Response(status_code=403)
    headers |= {
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": _ALLOW_HEADERS,
        "Access-Control-Max-Age": _MAX_AGE,
    }
    return Response(status_code=204, headers=headers)


@router.options("/{direction}", include_in_schema=False)
async def preflight(direction: Direction, request: Request, settings: SettingsDep) -> Response:
    return _preflight(request, settings)


@router.options("/k/{key}/{direction}", include_in_schema=False)
async def preflight_path_key(
    key: str, direction: Direction, request: Request, settings: SettingsDep
) -> Response:
    return _preflight(request, settings)
