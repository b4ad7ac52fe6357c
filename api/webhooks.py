"""Provider webhooks: SendGrid events, Twilio message status and inbound messages.

Every signature is checked on the raw body before anything is parsed or recorded: a bad
or missing one is a 401 and changes nothing. Providers retry; duplicates are acknowledged
and ignored (their event ids are unique in ``message_events``/``inbound_messages``).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from pydantic import SecretStr
from sendgrid.helpers.eventwebhook import EventWebhook
from twilio.request_validator import RequestValidator

from api.deps import SessionDep, SettingsDep
from api.errors import documented
from config.settings import Settings
from contracts.errors import BadRequest, Unauthorized
from services.messaging import provider_events
from services.platform import metrics

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
log = logging.getLogger(__name__)

SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
TWILIO_SIGNATURE = "X-Twilio-Signature"
_EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def signed_request(
    request: Request, secret: SecretStr | None, *, header: str, setting: str, what: str
) -> tuple[str, str]:
    """The configured secret and the request's signature, or a 401 saying which is missing."""
    signature = request.headers.get(header)
    if secret is None:
        log.error("webhook on %s refused: %s is not set", request.url.path, setting)
        raise Unauthorized(f"webhook signature cannot be verified: no {what} configured")
    if not signature:
        raise Unauthorized(f"missing {header}")
    return secret.get_secret_value(), signature


def _verify_sendgrid(settings: Settings, request: Request, body: bytes) -> None:
    key, signature = signed_request(
        request,
        settings.sendgrid_webhook_public_key,
        header=SENDGRID_SIGNATURE,
        setting="SUTRA_SENDGRID_WEBHOOK_PUBLIC_KEY",
        what="public key",
    )
    timestamp = request.headers.get(SENDGRID_TIMESTAMP)
    if not timestamp:
        raise Unauthorized(f"missing {SENDGRID_TIMESTAMP}")
    try:
        skew = abs(time.time() - int(timestamp))
    except ValueError:
        raise Unauthorized("malformed webhook timestamp") from None
    if skew > settings.webhook_tolerance.total_seconds():
        raise Unauthorized("webhook timestamp outside the accepted window (replayed?)")
    helper = EventWebhook()
    try:
        public_key = helper.convert_public_key_to_ecdsa(key)
        valid = helper.verify_signature(body.decode(), signature, timestamp, public_key)
    except Exception:  # a malformed signature is a wrong signature
        valid = False
    if not valid:
        raise Unauthorized("invalid webhook signature")


def _verify_twilio(settings: Settings, request: Request, params: dict[str, str]) -> None:
    token, signature = signed_request(
        request,
        settings.twilio_auth_token,
        header=TWILIO_SIGNATURE,
        setting="SUTRA_TWILIO_AUTH_TOKEN",
        what="auth token",
    )
    # Twilio signs the URL it called, which is the public one, not what a proxy forwarded.
    url = settings.public_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    if not RequestValidator(token).validate(url, params, signature):
        raise Unauthorized("invalid webhook signature")


def _form(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError as exc:
        raise BadRequest("webhook body is not valid form data") from exc


@router.post(
    "/sendgrid",
    summary="SendGrid Event Webhook (signed)",
    responses=documented(400, 401),
)
async def sendgrid_events(
    request: Request, session: SessionDep, settings: SettingsDep
) -> dict[str, int]:
    body = await request.body()
    _verify_sendgrid(settings, request, body)
    try:
        events: Any = json.loads(body)
    except ValueError as exc:
        raise BadRequest("webhook body is not valid JSON") from exc
    if not isinstance(events, list):
        raise BadRequest("SendGrid sends a JSON array of events")
    applied = await provider_events.apply_sendgrid_events(
        session, [e for e in events if isinstance(e, dict)]
    )
    metrics.WEBHOOKS.labels("sendgrid", "applied").inc(applied)
    return {"received": len(events), "applied": applied}


@router.post(
    "/twilio/status",
    summary="Twilio message status callback (signed)",
    responses=documented(400, 401),
)
async def twilio_status(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    params = _form(await request.body())
    _verify_twilio(settings, request, params)
    fresh = await provider_events.apply_twilio_status(
        session, params, request.query_params.get("message_id")
    )
    metrics.WEBHOOKS.labels("twilio_status", "applied" if fresh else "duplicate").inc()
    return Response(status_code=204)


@router.post(
    "/twilio/inbound",
    summary="Twilio inbound SMS / WhatsApp (signed); STOP and START change consent",
    responses=documented(400, 401),
)
async def twilio_inbound(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    params = _form(await request.body())
    _verify_twilio(settings, request, params)
    inbound = await provider_events.apply_inbound(session, params)
    metrics.WEBHOOKS.labels("twilio_inbound", "applied" if inbound else "duplicate").inc()
    # An empty TwiML answer: Twilio's own opt-out handling replies to STOP on SMS.
    return Response(_EMPTY_TWIML, media_type="text/xml")
