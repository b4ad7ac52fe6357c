"""The payment provider used when Razorpay/Stripe have no credentials (``make run``).

Links point at this API's sandbox page; nothing is charged. Paying one is simulated with
``POST /sandbox/pay/{reference}`` (or by sending a ``payment.captured`` event).
"""

from __future__ import annotations

import hashlib
import logging

from config.settings import Settings
from payments.base import Link, LinkRequest, RefundRequest

log = logging.getLogger("sutra.sandbox_payments")


class SandboxPayments:
    def __init__(self, settings: Settings, *, stands_for: str) -> None:
        self.name = f"sandbox:{stands_for}"
        self._base = settings.public_url.rstrip("/")

    def create_link(self, request: LinkRequest, *, retrying: bool) -> Link:
        url = f"{self._base}/sandbox/pay/{request.reference}"
        log.info(
            "sandbox payment link for order %s: %s %s at %s",
            request.order_id,
            request.amount,
            request.currency,
            url,
        )
        return Link(provider=self.name, link_id=f"sbx_{request.reference}", url=url)

    def cancel_link(self, link_id: str) -> Link:
        reference = link_id.removeprefix("sbx_")
        return Link(
            provider=self.name,
            link_id=link_id,
            url=f"{self._base}/sandbox/pay/{reference}",
            status="cancelled",
        )

    def refund(self, request: RefundRequest, *, retrying: bool) -> str:
        log.info(
            "sandbox refund of %s %s for %s", request.amount, request.currency, request.order_id
        )
        return "sbx_rfnd_" + hashlib.sha256(request.key.encode()).hexdigest()[:16]
