"""Fixtures for the fake providers; each asserts at teardown that every request the SDKs
made was one the real provider would accept. One server per run, reset between tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.providers.fake_payments import FakeRazorpay, FakeStripe
from tests.providers.fake_sendgrid import FakeSendGrid
from tests.providers.fake_twilio import FakeTwilio


@pytest.fixture(scope="session")
def _sendgrid_server() -> Iterator[FakeSendGrid]:
    fake = FakeSendGrid().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def _twilio_server() -> Iterator[FakeTwilio]:
    fake = FakeTwilio().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_sendgrid(_sendgrid_server: FakeSendGrid) -> Iterator[FakeSendGrid]:
    _sendgrid_server.reset()
    yield _sendgrid_server
    problems = list(_sendgrid_server.violations)
    _sendgrid_server.reset()
    assert problems == [], "requests SendGrid would refuse:\n" + "\n".join(problems)


@pytest.fixture
def fake_twilio(_twilio_server: FakeTwilio) -> Iterator[FakeTwilio]:
    _twilio_server.reset()
    yield _twilio_server
    problems = list(_twilio_server.violations)
    _twilio_server.reset()
    assert problems == [], "requests Twilio would refuse:\n" + "\n".join(problems)


@pytest.fixture(scope="session")
def _razorpay_server() -> Iterator[FakeRazorpay]:
    fake = FakeRazorpay().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def _stripe_server() -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_razorpay(_razorpay_server: FakeRazorpay) -> Iterator[FakeRazorpay]:
    _razorpay_server.reset()
    yield _razorpay_server
    problems = list(_razorpay_server.violations)
    _razorpay_server.reset()
    assert problems == [], "requests Razorpay would refuse:\n" + "\n".join(problems)


@pytest.fixture
def fake_stripe(_stripe_server: FakeStripe) -> Iterator[FakeStripe]:
    _stripe_server.reset()
    yield _stripe_server
    problems = list(_stripe_server.violations)
    _stripe_server.reset()
    assert problems == [], "requests Stripe would refuse:\n" + "\n".join(problems)
