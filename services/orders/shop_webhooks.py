"""Outbound webhooks to the shop's backend: what Sutra decided about an order that the shop
must act on (a cancellation for non-payment, an SLA breach), signed (services/platform/outbound.py);
``Idempotency-Key`` repeats on every retry of the same notice so the shop can ignore
duplicates."""

from __future__ import annotations

import json
import logging

from config.settings import Settings
from contracts.orders import ShopNotice
from services.platform.outbound import post_signed

log = logging.getLogger("sutra.shop_webhooks")


class ShopWebhookError(RuntimeError):
    pass


async def deliver(settings: Settings, notice: ShopNotice) -> str:
    """``sent``, or ``not_configured`` when no URL is set (the notice is only logged)."""
    body = json.dumps(notice.model_dump(mode="json"), sort_keys=True).encode()
    if not settings.shop_webhook_url or settings.shop_webhook_secret is None:
        log.info("shop webhook not configured; would send %s", body.decode())
        return "not_configured"
    response = await post_signed(
        settings,
        settings.shop_webhook_url,
        settings.shop_webhook_secret.get_secret_value(),
        body,
        idempotency_key=notice.key,
        headers={"X-Sutra-Event": notice.type},
    )
    if response.status_code >= 300:
        raise ShopWebhookError(
            f"shop webhook answered {response.status_code}: {response.text[:200]}"
        )
    return "sent"
