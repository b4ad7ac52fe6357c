"""Stripe Checkout Sessions through the official ``stripe`` SDK.

Creates and refunds carry Stripe idempotency keys derived from Sutra's references, so a
retried activity gets the first attempt's object back (Stripe keeps keys 24 hours, longer
than any of our retry schedules).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import stripe

from config.settings import Settings
from contracts.payment_policy import to_minor
from payments.base import Link, LinkRequest, LinkStatus, PaymentError, RefundRequest

# Stripe accepts a Checkout Session expiry between 30 minutes and 24 hours ahead.
_MIN_EXPIRY = timedelta(minutes=31)
_MAX_EXPIRY = timedelta(hours=23, minutes=59)


class StripeCheckout:
    name = "stripe"

    def __init__(self, settings: Settings) -> None:
        if settings.stripe_api_key is None:
            raise PaymentError("Stripe has no credentials", permanent=True)
        self._client = stripe.StripeClient(
            settings.stripe_api_key.get_secret_value(),
            base_addresses={"api": settings.stripe_api_base},
            # Our activities retry; the SDK retrying inside one attempt would hide outages.
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=settings.provider_timeout.total_seconds()),
        )
        self._success_url = settings.shop_url

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (stripe.InvalidRequestError, stripe.CardError, stripe.PermissionError) as exc:
            raise PaymentError(
                f"Stripe refused: {exc.user_message or exc}", permanent=True, code=exc.code
            ) from exc
        except stripe.AuthenticationError as exc:
            raise PaymentError("Stripe rejected the API key", permanent=True) from exc
        except stripe.StripeError as exc:  # connection, rate limit, 5xx, idempotency races
            raise PaymentError(f"Stripe unavailable: {exc}", permanent=False) from exc

    def create_link(self, request: LinkRequest, *, retrying: bool) -> Link:
        now = datetime.now(UTC)
        expire_at = min(max(request.expire_at, now + _MIN_EXPIRY), now + _MAX_EXPIRY)
        metadata = {
            "order_id": request.order_id,
            "purpose": request.purpose,
            "reference": request.reference,
        }
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": request.currency.lower(),
                        "unit_amount": to_minor(request.amount, request.currency),
                        "product_data": {"name": request.description[:250]},
                    },
                }
            ],
            "client_reference_id": request.reference,
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
            "expires_at": int(expire_at.timestamp()),
            "success_url": self._success_url,
        }
        if request.customer_email:
            params["customer_email"] = request.customer_email
        session = self._call(
            self._client.v1.checkout.sessions.create,
            params,
            {"idempotency_key": f"sutra-link-{request.reference}"},
        )
        return _link(session)

    def cancel_link(self, link_id: str) -> Link:
        try:
            return _link(self._call(self._client.v1.checkout.sessions.expire, link_id))
        except PaymentError as exc:
            if not exc.permanent:
                raise
            # Completed (or expired) meanwhile: say what it is.
            return _link(self._call(self._client.v1.checkout.sessions.retrieve, link_id))

    def refund(self, request: RefundRequest, *, retrying: bool) -> str:
        refund = self._call(
            self._client.v1.refunds.create,
            {
                "payment_intent": request.payment_id,
                "amount": to_minor(request.amount, request.currency),
                "metadata": {"order_id": request.order_id, "sutra_key": request.key},
            },
            {"idempotency_key": f"sutra-refund-{request.key}"},
        )
        return str(refund.id)


def _link(obj: Any) -> Link:
    session: dict[str, Any] = obj.to_dict()
    status: LinkStatus = "created"
    if session.get("payment_status") == "paid" or session.get("status") == "complete":
        status = "paid"
    elif session.get("status") == "expired":
        status = "expired"
    intent = session.get("payment_intent")
    return Link(
        provider="stripe",
        link_id=str(session["id"]),
        url=str(session.get("url") or ""),
        status=status,
        payment_id=intent if isinstance(intent, str) else None,
    )
