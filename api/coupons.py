"""Coupons: look one up, redeem it once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from api.deps import SessionDep, require_any
from api.errors import documented
from db.models import Coupon
from services.journeys import coupons
from services.platform.api_keys import Principal

router = APIRouter(prefix="/v1/coupons", tags=["coupons"])
# The shop's backend checks and redeems codes at checkout; ops look them up.
Backend = Annotated[Principal, Depends(require_any("events:write", "ops"))]


class CouponOut(BaseModel):
    code: str
    valid: bool = Field(description="Active and unexpired: it can be redeemed now")
    status: str = Field(description="active, redeemed, revoked or expired")
    percent_off: int
    expires_at: datetime
    customer_id: str
    cart_id: str | None
    rule_id: str | None
    rule_version: int | None
    step: str | None
    redeemed_at: datetime | None
    redeemed_order_id: str | None
    revoke_reason: str | None

    @classmethod
    def of(cls, coupon: Coupon) -> CouponOut:
        state = coupons.state(coupon, datetime.now(UTC))
        return cls(
            code=coupon.code,
            valid=state == "active",
            status=state,
            percent_off=coupon.percent_off,
            expires_at=coupon.expires_at,
            customer_id=coupon.customer_id,
            cart_id=coupon.cart_id,
            rule_id=coupon.rule_id,
            rule_version=coupon.rule_version,
            step=coupon.step,
            redeemed_at=coupon.redeemed_at,
            redeemed_order_id=coupon.redeemed_order_id,
            revoke_reason=coupon.revoke_reason,
        )


class RedeemIn(BaseModel):
    order_id: str | None = Field(default=None, max_length=128)
    customer_id: str | None = Field(
        default=None, max_length=128, description="When given, must be the coupon's customer"
    )


@router.get("/{code}", responses=documented(401, 403, 404))
async def get_coupon(code: str, session: SessionDep, _: Backend) -> CouponOut:
    return CouponOut.of(await coupons.get(session, code))


@router.post(
    "/{code}/redeem",
    summary="Use the coupon; single use, so a second redeem is a 409",
    responses=documented(401, 403, 404, 409),
)
async def redeem_coupon(
    code: str, session: SessionDep, _: Backend, body: RedeemIn | None = None
) -> CouponOut:
    body = body or RedeemIn()
    coupon = await coupons.redeem(
        session,
        code,
        order_id=body.order_id,
        customer_id=body.customer_id,
        now=datetime.now(UTC),
    )
    return CouponOut.of(coupon)
