"""Coupons: single use, expiring, bound to a customer; or minted by the shop's endpoint."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from werkzeug.wrappers import Request, Response

from config.settings import Environment, Settings
from services.journeys import coupons
from tests.conftest import ADMIN_KEY, Api, auth
from tests.factories import uid


async def _issue(
    sessionmaker: async_sessionmaker[AsyncSession], *, expires_in: timedelta = timedelta(days=1)
) -> str:
    async with sessionmaker() as session, session.begin():
        coupon = await coupons.issue(
            session,
            issue_key=uid("key"),
            percent_off=10,
            expires_in=expires_in,
            customer_id="c_owner",
            cart_id=uid("cart"),
            rule_id=None,
            rule_version=None,
            step="2",
            now=datetime.now(UTC),
        )
        return coupon.code


async def test_a_coupon_is_shown_and_redeemed_once(api: Api, sessionmaker):
    code = await _issue(sessionmaker)

    shown = await api.get(f"/v1/coupons/{code}")
    wrong = await api.http.post(
        f"/v1/coupons/{code}/redeem",
        json={"customer_id": "c_someone_else"},
        headers=auth(ADMIN_KEY),
    )
    first = await api.http.post(
        f"/v1/coupons/{code}/redeem",
        json={"customer_id": "c_owner", "order_id": "ord_1"},
        headers=auth(ADMIN_KEY),
    )
    second = await api.http.post(f"/v1/coupons/{code}/redeem", headers=auth(ADMIN_KEY))

    assert shown.json()["valid"] is True
    assert wrong.status_code == 422
    assert first.status_code == 200
    assert first.json()["redeemed_order_id"] == "ord_1"
    assert second.status_code == 409
    assert second.json()["error"] == "conflict"


async def test_an_expired_coupon_cannot_be_redeemed(api: Api, sessionmaker):
    code = await _issue(sessionmaker, expires_in=timedelta(microseconds=1))

    shown = (await api.get(f"/v1/coupons/{code}")).json()
    response = await api.http.post(f"/v1/coupons/{code}/redeem", headers=auth(ADMIN_KEY))

    assert (shown["status"], shown["valid"]) == ("expired", False)
    assert response.status_code == 409
    assert response.json()["coupon_status"] == "expired"


async def test_unknown_coupons_are_404(api: Api):
    assert (await api.get("/v1/coupons/NOPE-NOPE")).status_code == 404


def test_codes_are_unique_and_unambiguous():
    codes = {coupons.new_code() for _ in range(5000)}

    assert len(codes) == 5000
    assert not any(set(c) & set("01OIL") for c in codes)


async def test_the_shop_can_mint_its_own_codes_over_a_signed_call(httpserver: HTTPServer):
    secret = "shop-coupon-secret"
    seen: list[Request] = []

    def mint(request: Request) -> Response:
        seen.append(request)
        return Response(json.dumps({"code": "SHOP-5OFF-42"}), content_type="application/json")

    httpserver.expect_request("/coupons", method="POST").respond_with_handler(mint)
    settings = Settings(
        env=Environment.test,
        coupon_webhook_url=httpserver.url_for("/coupons"),
        coupon_webhook_secret=secret,
    )

    code = await coupons.mint_at_shop(
        settings, {"issue_key": "cart/x/step-2", "percent_off": 5, "customer_id": "c_1"}
    )

    assert code == "SHOP-5OFF-42"
    [request] = seen
    assert request.headers["Idempotency-Key"] == "cart/x/step-2"
    stamp, digest = (p.split("=", 1)[1] for p in request.headers["X-Sutra-Signature"].split(","))
    expected = hmac.new(
        secret.encode(), f"{stamp}.".encode() + request.get_data(), hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(digest, expected)
    assert json.loads(request.get_data())["percent_off"] == 5


async def test_minting_at_the_shop_without_configuration_says_what_is_missing():
    with pytest.raises(coupons.CouponError, match="SUTRA_COUPON_WEBHOOK_URL"):
        await coupons.mint_at_shop(Settings(env=Environment.test), {"issue_key": "k"})
