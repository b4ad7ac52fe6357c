"""Coupons: unique, single-use, expiring codes bound to a customer (and cart).

Minted once per journey step (``issue_key``), so a retried activity gets the same code;
a bigger discount for the same cart revokes the smaller unused one; a code whose message
never went out is revoked. A rule may instead ask the shop's own coupon endpoint.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from config.settings import Settings
from contracts.errors import Conflict, NotFound, SutraError, Unprocessable
from db.models import Coupon
from services.platform.outbound import post_signed

# No 0/O or 1/I/L: codes get read aloud and typed on phones.
_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
SUPERSEDED = "superseded by a bigger discount"


def new_code(prefix: str = "SUTRA") -> str:
    body = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return f"{prefix}-{body[:4]}-{body[4:]}"


def state(coupon: Coupon, now: datetime) -> str:
    if coupon.status == "active" and coupon.expires_at <= now:
        return "expired"
    return coupon.status


class CouponError(SutraError):
    """The shop's coupon endpoint cannot mint a code: an activity's failure, retried."""


async def get(session: AsyncSession, code: str, *, for_update: bool = False) -> Coupon:
    """The coupon with this code; ``NotFound`` when there is none."""
    coupon = await session.get(Coupon, code, with_for_update=for_update)
    if coupon is None:
        raise NotFound(f"no coupon {code!r}")
    return coupon


async def issue(
    session: AsyncSession,
    *,
    issue_key: str,
    percent_off: int,
    expires_in: timedelta,
    customer_id: str,
    cart_id: str | None,
    rule_id: str | None,
    rule_version: int | None,
    step: str | None,
    now: datetime,
    code: str | None = None,
    source: str = "sutra",
) -> Coupon:
    existing = await session.scalar(select(Coupon).where(Coupon.issue_key == issue_key))
    if existing is not None:
        return existing
    coupon = Coupon(
        code=code or new_code(),
        issue_key=issue_key,
        percent_off=percent_off,
        customer_id=customer_id,
        cart_id=cart_id,
        rule_id=rule_id,
        rule_version=rule_version,
        step=step,
        source=source,
        status="active",
        expires_at=now + expires_in,
    )
    session.add(coupon)
    await session.flush()
    return coupon


async def supersede(session: AsyncSession, code: str, now: datetime) -> int:
    """Once a bigger discount has reached the customer, the smaller unused ones for the
    same cart stop working (not before: if its message fails, the old code still holds)."""
    coupon = await session.get(Coupon, code)
    if coupon is None or coupon.cart_id is None:
        return 0
    result = await session.execute(
        update(Coupon)
        .where(
            Coupon.cart_id == coupon.cart_id,
            Coupon.customer_id == coupon.customer_id,
            Coupon.status == "active",
            Coupon.percent_off < coupon.percent_off,
        )
        .values(status="revoked", revoked_at=now, revoke_reason=SUPERSEDED)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def revoke(session: AsyncSession, code: str, reason: str, now: datetime) -> bool:
    result = await session.execute(
        update(Coupon)
        .where(Coupon.code == code, Coupon.status == "active")
        .values(status="revoked", revoked_at=now, revoke_reason=reason)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def redeem(
    session: AsyncSession,
    code: str,
    *,
    order_id: str | None,
    customer_id: str | None,
    now: datetime,
) -> Coupon:
    coupon = await get(session, code, for_update=True)
    current = state(coupon, now)
    if current != "active":
        raise Conflict(f"coupon {code} is {current}", coupon_status=current)
    if customer_id is not None and customer_id != coupon.customer_id:
        msg = f"coupon {code} belongs to another customer"
        raise Unprocessable(msg, fields=[{"loc": ["body", "customer_id"], "msg": msg}])
    coupon.status, coupon.redeemed_at, coupon.redeemed_order_id = "redeemed", now, order_id
    return coupon


async def mint_at_shop(settings: Settings, payload: dict[str, Any]) -> str:
    """Ask the shop's coupon endpoint for a code (HMAC-signed request)."""
    if not settings.coupon_webhook_url or settings.coupon_webhook_secret is None:
        raise CouponError(
            "rule asks the shop for coupons but SUTRA_COUPON_WEBHOOK_URL/SECRET are not set"
        )
    response = await post_signed(
        settings,
        settings.coupon_webhook_url,
        settings.coupon_webhook_secret.get_secret_value(),
        json.dumps(payload, sort_keys=True).encode(),
        idempotency_key=str(payload["issue_key"]),
    )
    response.raise_for_status()
    code = response.json().get("code")
    if not isinstance(code, str) or not 1 <= len(code) <= 64:
        raise CouponError("the shop's coupon endpoint answered without a usable code")
    return code
