"""The API with the Razorpay and Stripe fakes behind it and a worker, as the orders tests
run it: the ``order_api`` fixture (registered in ``tests/conftest.py``) and its settings;
and ``dev_order_shop``, an order shop on the dev server with no worker of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from config.settings import Settings
from contracts.payment_policy import PaymentPolicy
from tests.conftest import Api, make_settings, start_api
from tests.order_shop import OrderShop, ShopEndpoint, order_settings
from tests.providers.fake_payments import (
    RAZORPAY_KEY_ID,
    RAZORPAY_KEY_SECRET,
    RAZORPAY_WEBHOOK_SECRET,
    STRIPE_API_KEY,
    STRIPE_WEBHOOK_SECRET,
    FakeRazorpay,
    FakeStripe,
)
from worker import build_worker


def order_api_settings(
    database_url: str,
    dev_server: WorkflowEnvironment,
    task_queue: str,
    fake_razorpay: FakeRazorpay,
    fake_stripe: FakeStripe,
    **overrides: Any,
) -> Settings:
    """Settings for an API that takes payments through the Razorpay and Stripe fakes."""
    return make_settings(
        database_url,
        dev_server.client.service_client.config.target_host,
        task_queue,
        razorpay_key_id=RAZORPAY_KEY_ID,
        razorpay_key_secret=SecretStr(RAZORPAY_KEY_SECRET),
        razorpay_webhook_secret=SecretStr(RAZORPAY_WEBHOOK_SECRET),
        razorpay_base_url=fake_razorpay.url,
        stripe_api_key=SecretStr(STRIPE_API_KEY),
        stripe_webhook_secret=SecretStr(STRIPE_WEBHOOK_SECRET),
        stripe_api_base=fake_stripe.url,
        payment_policy=PaymentPolicy(),
        **overrides,
    )


@pytest.fixture
async def order_api(
    database_url: str,
    dev_server: WorkflowEnvironment,
    task_queue: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_razorpay: FakeRazorpay,
    fake_stripe: FakeStripe,
) -> AsyncIterator[Api]:
    settings = order_api_settings(database_url, dev_server, task_queue, fake_razorpay, fake_stripe)
    api, manager = await start_api(settings)
    async with build_worker(dev_server.client, task_queue, sessionmaker, settings):
        yield api
    await api.http.aclose()
    await manager.__aexit__(None, None, None)


@pytest.fixture
def dev_order_shop(
    dev_server: WorkflowEnvironment,
    task_queue: str,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    fake_razorpay: FakeRazorpay,
    fake_stripe: FakeStripe,
    shop_endpoint: ShopEndpoint,
) -> OrderShop:
    """Orders of a shop on the dev server; the test starts the workers it wants."""
    settings = order_settings(database_url, task_queue, fake_razorpay, fake_stripe, shop_endpoint)
    return OrderShop(dev_server, settings, sessionmaker)
