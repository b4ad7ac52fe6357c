"""Razorpay Payment Links through the official ``razorpay`` SDK.

``reference_id`` is unique per merchant at Razorpay, so it carries Sutra's link reference:
a retried create first looks the reference up. Refunds carry the idempotency key in
``receipt`` and a retried refund looks for it among the payment's refunds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import razorpay
import requests
from razorpay.errors import BadRequestError, GatewayError, ServerError

from config.settings import Settings
from contracts.payment_policy import to_minor
from payments.base import Link, LinkRequest, LinkStatus, PaymentError, RefundRequest

# Razorpay refuses a link that expires less than 15 minutes after it is created. A link
# created late (after retries, close to the order's deadline) gets those minutes, with one
# to spare for the trip; the order workflow cancels it at its own deadline all the same.
_MIN_EXPIRY = timedelta(minutes=16)

_STATUS: dict[str, LinkStatus] = {
    "created": "created",
    "partially_paid": "created",
    "paid": "paid",
    "cancelled": "cancelled",
    "expired": "expired",
}


class RazorpayLinks:
    name = "razorpay"

    def __init__(self, settings: Settings) -> None:
        if not settings.razorpay_key_id or settings.razorpay_key_secret is None:
            raise PaymentError("Razorpay has no credentials", permanent=True)
        self._client = razorpay.Client(
            auth=(settings.razorpay_key_id, settings.razorpay_key_secret.get_secret_value()),
            base_url=settings.razorpay_base_url,
        )
        self._timeout = settings.provider_timeout.total_seconds()
        self._callback = settings.shop_url

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args, timeout=self._timeout)
        except BadRequestError as exc:
            raise PaymentError(f"Razorpay refused: {exc}", permanent=True) from exc
        except (GatewayError, ServerError, requests.RequestException, ValueError) as exc:
            raise PaymentError(f"Razorpay unavailable: {exc}", permanent=False) from exc

    def create_link(self, request: LinkRequest, *, retrying: bool) -> Link:
        if retrying:
            found = self._find(request.reference)
            if found is not None:
                return found
        customer = {
            k: v
            for k, v in {
                "name": request.customer_name,
                "email": request.customer_email,
                "contact": request.customer_phone,
            }.items()
            if v
        }
        body: dict[str, Any] = {
            "amount": to_minor(request.amount, request.currency),
            "currency": request.currency,
            "accept_partial": False,
            "reference_id": request.reference,
            "description": request.description[:2048],
            "expire_by": int(max(request.expire_at, datetime.now(UTC) + _MIN_EXPIRY).timestamp()),
            # Sutra sends the link itself, in the customer's language and hours.
            "notify": {"sms": False, "email": False},
            "reminder_enable": False,
            "notes": {"order_id": request.order_id, "purpose": request.purpose},
            "callback_url": self._callback,
            "callback_method": "get",
        }
        if customer:
            body["customer"] = customer
        return _link(self._call(self._client.payment_link.create, body))

    def _find(self, reference: str) -> Link | None:
        page = self._call(self._client.payment_link.all, {"reference_id": reference})
        links = page.get("payment_links") or page.get("items") or []
        for item in links:
            if item.get("reference_id") == reference:
                return _link(item)
        return None

    def cancel_link(self, link_id: str) -> Link:
        try:
            return _link(self._call(self._client.payment_link.cancel, link_id))
        except PaymentError as exc:
            if not exc.permanent:
                raise
            # Paid (or expired) meanwhile: Razorpay refuses to cancel; say what it is.
            return _link(self._call(self._client.payment_link.fetch, link_id))

    def refund(self, request: RefundRequest, *, retrying: bool) -> str:
        if retrying:
            page = self._call(self._client.payment.fetch_multiple_refund, request.payment_id)
            for item in page.get("items", []):
                if item.get("receipt") == request.key:
                    return str(item["id"])
        body = {
            "amount": to_minor(request.amount, request.currency),
            "speed": "normal",
            "receipt": request.key,
            "notes": {"order_id": request.order_id, "reason": request.reason[:200]},
        }
        refund = self._call(self._client.payment.refund, request.payment_id, body)
        return str(refund["id"])


def _link(item: dict[str, Any]) -> Link:
    payments = item.get("payments") or []
    payment_id = payments[-1].get("payment_id") if payments else None
    return Link(
        provider="razorpay",
        link_id=str(item["id"]),
        url=str(item.get("short_url") or ""),
        status=_STATUS.get(str(item.get("status")), "created"),
        payment_id=payment_id,
    )
