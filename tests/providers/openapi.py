"""Check a request a provider SDK made against the provider's own OpenAPI document.

A payload the real provider would refuse then fails our tests instead of production.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict
from werkzeug.wrappers import Request

SPECS = Path(__file__).parent / "specs"
Spec = Literal["sendgrid", "twilio"]
_FILES = {"sendgrid": "sendgrid_mail_v3.json", "twilio": "twilio_api_v2010.json"}
_SERVERS = {"sendgrid": "https://api.sendgrid.com", "twilio": "https://api.twilio.com"}


@cache
def _document(spec: Spec) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SPECS / _FILES[spec]).read_text())
    return document


@cache
def _openapi(spec: Spec) -> OpenAPI:
    return OpenAPI.from_dict(_document(spec))


@dataclass
class _Request:
    """What openapi-core reads of a request, with the provider's real host: the fake
    listens on localhost, but the spec only knows the provider's server."""

    host_url: str
    path: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters


def _declared_form_fields(spec: Spec, path_template: str, method: str) -> set[str] | None:
    operation = _document(spec)["paths"][path_template][method]
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/x-www-form-urlencoded", {}).get("schema")
    return set(schema.get("properties", {})) if schema else None


def violations(spec: Spec, request: Request, path_template: str | None = None) -> list[str]:
    """Every way the request breaks the spec; empty when the provider would accept it."""
    wrapped = _Request(
        host_url=_SERVERS[spec] + "/",
        path=request.path,
        method=request.method.lower(),
        body=request.get_data(),
        content_type=request.content_type or "application/octet-stream",
        parameters=RequestParameters(
            query=ImmutableMultiDict(request.args),
            header=Headers(request.headers),
            cookie=request.cookies,
        ),
    )
    problems = [_describe(error) for error in _openapi(spec).iter_request_errors(wrapped)]
    if path_template and (request.content_type or "").startswith(
        "application/x-www-form-urlencoded"
    ):
        # openapi-core lets undeclared form fields through; a misspelt Twilio parameter
        # would then be silently ignored by Twilio. Catch it here.
        declared = _declared_form_fields(spec, path_template, request.method.lower())
        if declared is not None:
            sent = {k for k, _ in parse_qsl(request.get_data(as_text=True), keep_blank_values=True)}
            problems += [f"undeclared form field {name!r}" for name in sorted(sent - declared)]
    return problems


def _describe(error: Exception) -> str:
    parts = [f"{type(error).__name__}: {error}"]
    cause = error.__cause__
    while cause is not None:
        details = getattr(cause, "schema_errors", None)
        if details:
            parts += [f"  - {e.message} (at {'/'.join(map(str, e.path))})" for e in details]
        else:
            parts.append(f"  caused by {type(cause).__name__}: {cause}")
        cause = cause.__cause__
    return "\n".join(parts)
