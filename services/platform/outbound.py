"""Requests Sutra makes to the shop's own backend (coupon minting, order notices), signed
like Stripe's webhooks: ``X-Sutra-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">``."""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx

from config.settings import Settings


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    stamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


async def post_signed(
    settings: Settings,
    url: str,
    secret: str,
    body: bytes,
    *,
    idempotency_key: str,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a JSON body to the shop; the same ``idempotency_key`` on every retry."""
    async with httpx.AsyncClient(timeout=settings.provider_timeout.total_seconds()) as client:
        return await client.post(
            url,
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Sutra-Signature": sign(secret, body),
                "Idempotency-Key": idempotency_key,
                **(headers or {}),
            },
        )
