"""Payment provider webhooks (Razorpay, Stripe) and the sandbox's pay page.

A verified "paid" notification marks Sutra's payment link paid and becomes a
``payment.captured`` event through the normal intake: stored once (the provider's event id
is the event id), then delivered durably to the order's workflow. Signatures are checked on
the raw body before anything is parsed; a bad, missing or stale one is a 401 and changes
nothing. Razorpay signs no timestamp, so its own ``created_at`` bounds how old a
notification may be; Stripe's signed timestamp must be within the webhook tolerance.
"""

from __future__ import annotations

import hashlib
import html
import json
import time
from datetime import UTC, datetime
from typing import Any

import razorpay
import stripe
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from razorpay.errors import SignatureVerificationError

from api.deps import SessionDep, SettingsDep
from api.errors import documented
from api.webhooks import signed_request
from contracts.errors import BadRequest, Unauthorized
from contracts.fields import unix_instant
from contracts.payment_policy import from_minor, quantize
from services.orders.payments import record_capture, sandbox_link
from services.platform import metrics

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
sandbox = APIRouter(prefix="/sandbox", tags=["sandbox"], include_in_schema=False)

RAZORPAY_SIGNATURE = "X-Razorpay-Signature"
RAZORPAY_EVENT_ID = "X-Razorpay-Event-Id"
STRIPE_SIGNATURE = "Stripe-Signature"
_STRIPE_PAID = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})


@router.post(
    "/razorpay",
    summary="Razorpay webhook (X-Razorpay-Signature over the raw body)",
    responses=documented(400, 401),
)
async def razorpay_webhook(
    request: Request, session: SessionDep, settings: SettingsDep
) -> dict[str, str]:
    body = await request.body()
    secret, signature = signed_request(
        request,
        settings.razorpay_webhook_secret,
        header=RAZORPAY_SIGNATURE,
        setting="SUTRA_RAZORPAY_WEBHOOK_SECRET",
        what="secret",
    )
    try:
        razorpay.Utility().verify_webhook_signature(body.decode(), signature, secret)
    except (SignatureVerificationError, UnicodeDecodeError):
        raise Unauthorized("invalid webhook signature") from None
    try:
        payload: Any = json.loads(body)
        created_at = unix_instant(payload.get("created_at", 0))
    except (ValueError, AttributeError) as exc:
        raise BadRequest("webhook body is not a Razorpay event") from exc
    if created_at is None:
        raise BadRequest("created_at: not a Unix time (seconds) of this era")
    if time.time() - created_at.timestamp() > settings.payment_webhook_max_age.total_seconds():
        raise Unauthorized("webhook older than Razorpay's retry window (replayed?)")
    event_id = request.headers.get(RAZORPAY_EVENT_ID) or hashlib.sha256(body).hexdigest()[:32]
    outcome = "ignored"
    if payload.get("event") == "payment_link.paid":
        entities = payload.get("payload") or {}
        link = (entities.get("payment_link") or {}).get("entity") or {}
        payment = (entities.get("payment") or {}).get("entity") or {}
        currency = str(payment.get("currency") or link.get("currency") or "")
        minor = payment.get("amount") or link.get("amount_paid")
        if not link.get("reference_id") or not currency or not isinstance(minor, int):
            raise BadRequest("payment_link.paid without reference_id, amount or currency")
        outcome = await record_capture(
            session,
            settings,
            event_id=f"razorpay:{event_id}",
            reference=str(link["reference_id"]),
            payment_id=payment.get("id"),
            amount=from_minor(minor, currency),
            currency=currency,
            provider="razorpay",
            at=_not_after_now(created_at),
        )
    metrics.WEBHOOKS.labels("razorpay", outcome).inc()
    return {"status": outcome}


@router.post(
    "/stripe",
    summary="Stripe webhook (Stripe-Signature, checked by stripe.Webhook.construct_event)",
    responses=documented(400, 401),
)
async def stripe_webhook(
    request: Request, session: SessionDep, settings: SettingsDep
) -> dict[str, str]:
    body = await request.body()
    secret, signature = signed_request(
        request,
        settings.stripe_webhook_secret,
        header=STRIPE_SIGNATURE,
        setting="SUTRA_STRIPE_WEBHOOK_SECRET",
        what="secret",
    )
    try:
        event = stripe.Webhook.construct_event(
            body,
            signature,
            secret,
            tolerance=int(settings.webhook_tolerance.total_seconds()),
        )
    except stripe.SignatureVerificationError:
        raise Unauthorized("invalid or expired webhook signature (replayed?)") from None
    except ValueError as exc:
        raise BadRequest("webhook body is not a Stripe event") from exc
    outcome = "ignored"
    checkout: dict[str, Any] = event.to_dict()["data"]["object"]
    if event.type in _STRIPE_PAID and checkout.get("payment_status") == "paid":
        reference = checkout.get("client_reference_id")
        currency = str(checkout.get("currency") or "").upper()
        minor = checkout.get("amount_total")
        if not reference or not currency or not isinstance(minor, int):
            raise BadRequest("checkout session without client_reference_id, amount or currency")
        intent = checkout.get("payment_intent")
        created = unix_instant(event.to_dict().get("created"))
        if created is None:
            raise BadRequest("created: not a Unix time (seconds) of this era")
        outcome = await record_capture(
            session,
            settings,
            event_id=f"stripe:{event.id}",
            reference=str(reference),
            payment_id=intent if isinstance(intent, str) else None,
            amount=from_minor(minor, currency),
            currency=currency,
            provider="stripe",
            at=_not_after_now(created),
        )
    metrics.WEBHOOKS.labels("stripe", outcome).inc()
    return {"status": outcome}


def _not_after_now(at: datetime) -> datetime:
    # The provider signed it, so it is theirs: a clock running ahead is trusted to the
    # second it arrived, never later (a payment cannot be recorded as paid tomorrow).
    return min(at, datetime.now(UTC))


@sandbox.get("/pay/{reference}", response_class=HTMLResponse)
async def sandbox_page(reference: str, session: SessionDep, settings: SettingsDep) -> str:
    link = await sandbox_link(session, settings, reference)
    amount = html.escape(f"{link.amount.normalize():f} {link.currency}")
    state = html.escape(link.status)
    return (
        "<!doctype html><meta charset=utf-8><title>Sutra sandbox payment</title>"
        f"<h1>Pay {amount}</h1><p>Order {html.escape(link.order_id)} ({state}). "
        "Sandbox: no money moves.</p>"
        f'<form method=post action="/sandbox/pay/{html.escape(reference)}">'
        "<button>Simulate a successful payment</button></form>"
    )


@sandbox.post("/pay/{reference}")
async def sandbox_pay(reference: str, session: SessionDep, settings: SettingsDep) -> dict[str, str]:
    link = await sandbox_link(session, settings, reference)
    if link.status not in ("created", "paid"):
        raise BadRequest(f"this link is {link.status}")
    outcome = await record_capture(
        session,
        settings,
        event_id=f"sandbox:{reference}",
        reference=reference,
        payment_id=f"sbx_pay_{reference}",
        amount=quantize(link.amount, link.currency),
        currency=link.currency,
        provider=link.provider,
        at=datetime.now(UTC),
    )
    return {"status": outcome}
