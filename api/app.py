"""The HTTP API. ``uvicorn --factory api.app:create_app``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from api import (
    analytics,
    analytics_lift,
    analytics_net,
    analytics_overview,
    analytics_payments,
    api_keys,
    attribution_model,
    audit,
    carts,
    codec,
    coupons,
    customers,
    errors,
    events,
    health,
    journeys,
    messages,
    openapi,
    ops,
    orders,
    payment_webhooks,
    privacy,
    rules,
    segments,
    templates,
    unsubscribe,
    webhooks,
)
from api.middleware import (
    BodyLimitMiddleware,
    MetricsMiddleware,
    RateLimitMiddleware,
    SecurityHeadersMiddleware,
)
from api.request_ids import RequestIdMiddleware
from config.logging import configure_logging
from config.settings import Settings, get_settings
from dashboard import router as dashboard
from db.engine import create_engine, create_sessionmaker
from services.delivery.dispatcher import Dispatcher, running
from services.messaging.send import Messaging
from services.platform import tracing
from services.platform.api_keys import KeyCache, ensure_bootstrap_key
from services.platform.stranded import StrandedMonitor, monitoring
from services.platform.temporal import FAIL_FAST, connect
from services.templating.renderer import Renderer

log = logging.getLogger("sutra.api")

DESCRIPTION = """
Sutra turns a shop's events into durable customer journeys on Temporal.

Authenticate with `Authorization: Bearer <api key>`. Every error body is
`{"error": "<machine_code>", "detail": "<human text>"}`; validation errors add `fields`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings)
        engine = create_engine(settings)
        sessionmaker = create_sessionmaker(engine)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = sessionmaker
        app.state.key_cache = KeyCache()
        app.state.renderer = Renderer()
        # Ops' re-sends go out through the same send path as the worker's.
        app.state.messaging = Messaging.for_settings(settings, sessionmaker, app.state.renderer)
        if settings.bootstrap_admin_key:
            async with sessionmaker() as session, session.begin():
                await ensure_bootstrap_key(session, settings.bootstrap_admin_key.get_secret_value())
        # Lazy: the API must start, and accept events, while Temporal is down.
        app.state.temporal = await connect(settings, lazy=True, retry_config=FAIL_FAST)
        app.state.dispatcher = None
        app.state.stranded = StrandedMonitor(settings, app.state.temporal)
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(monitoring(app.state.stranded))
            if settings.dispatcher_enabled:
                app.state.dispatcher = Dispatcher(settings, sessionmaker, app.state.temporal)
                await stack.enter_async_context(running(app.state.dispatcher))
            yield
        await engine.dispose()
        tracing.flush()

    app = FastAPI(
        title="Sutra",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    errors.install(app)
    for router in (
        health.router,
        events.router,
        customers.router,
        privacy.router,
        carts.router,
        orders.router,
        journeys.router,
        messages.router,
        rules.router,
        analytics.router,
        analytics_overview.router,
        analytics_lift.router,
        analytics_net.router,
        attribution_model.router,
        analytics_payments.router,
        segments.router,
        coupons.router,
        templates.router,
        webhooks.router,
        payment_webhooks.router,
        payment_webhooks.sandbox,
        unsubscribe.router,
        api_keys.router,
        codec.router,
        audit.router,
        ops.router,
    ):
        app.include_router(router)
    dashboard.install(app)
    openapi.install(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        RateLimitMiddleware,
        per_minute=settings.rate_limit_per_minute,
        burst=settings.rate_limit_burst,
    )
    app.add_middleware(SecurityHeadersMiddleware, https=settings.public_url.startswith("https://"))
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)  # outermost: every line logged has the id
    return app
