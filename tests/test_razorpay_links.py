"""The Razorpay adapter against the fake Razorpay, which refuses what the real API refuses."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from config.settings import Environment, Settings
from payments.base import LinkRequest
from payments.razorpay_links import RazorpayLinks
from tests.providers.fake_payments import RAZORPAY_KEY_ID, RAZORPAY_KEY_SECRET, FakeRazorpay


def _request(expire_at: datetime) -> LinkRequest:
    return LinkRequest(
        reference="ord_late-upfront",
        order_id="ord_late",
        purpose="upfront",
        amount=Decimal("675.00"),
        currency="PKR",
        description="Upfront payment for order ord_late",
        expire_at=expire_at,
    )


def _links(fake: FakeRazorpay) -> RazorpayLinks:
    return RazorpayLinks(
        Settings(
            env=Environment.test,
            razorpay_key_id=RAZORPAY_KEY_ID,
            razorpay_key_secret=RAZORPAY_KEY_SECRET,
            razorpay_base_url=fake.url,
        )
    )


def test_a_link_created_close_to_its_deadline_still_lives_the_fifteen_minutes_razorpay_requires(
    fake_razorpay: FakeRazorpay,
):
    # Retries after an outage can leave the order's payment deadline minutes away.
    link = _links(fake_razorpay).create_link(
        _request(datetime.now(UTC) + timedelta(minutes=5)), retrying=False
    )
    [create] = fake_razorpay.calls_to("POST", "/v1/payment_links")
    assert create.body["expire_by"] >= time.time() + 15 * 60
    assert fake_razorpay.violations == []
    assert link.link_id


def test_a_link_with_a_later_deadline_expires_at_that_deadline(fake_razorpay: FakeRazorpay):
    deadline = datetime.now(UTC) + timedelta(hours=24)
    _links(fake_razorpay).create_link(_request(deadline), retrying=False)
    [create] = fake_razorpay.calls_to("POST", "/v1/payment_links")
    assert create.body["expire_by"] == int(deadline.timestamp())
