"""ASGI middleware: request body limit, request metrics, security headers, rate limits."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.platform import metrics
from services.platform.api_keys import hash_key
from services.platform.rate_limit import RateLimiter

_log = logging.getLogger(__name__)


class _TooLarge(Exception):
    pass


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps(
        {"error": "payload_too_large", "detail": f"request body exceeds {limit} bytes"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` before they are read into memory, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await _send_413(send, self.max_bytes)
                    return
        received = 0
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if not exceeded:  # the app's answer to a truncated body is replaced by ours
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            await _send_413(send, self.max_bytes)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.REQUEST_SECONDS.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )


# Security headers.

# FastAPI's /docs and /redoc pages load Swagger UI / ReDoc from jsDelivr and start them
# with an inline script; everything else Sutra serves needs nothing from elsewhere.
_DOCS_PATHS = ("/docs", "/redoc")
_DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "font-src 'self' https://fonts.gstatic.com https://cdn.jsdelivr.net; "
    "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'"
)
# The unsubscribe and sandbox pages are plain HTML with inline styles and a form to self.
_DEFAULT_CSP = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class SecurityHeadersMiddleware:
    """Headers every response carries, errors included (unless a handler set its own):
    nosniff, no framing, no referrer, a CSP, HSTS behind an https public URL, and
    ``Cache-Control: no-store`` (API answers are per-key and often personal data)."""

    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        common: list[tuple[bytes, bytes]] = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        if https:
            common.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
        self._api = [
            *common,
            (b"content-security-policy", _DEFAULT_CSP.encode()),
            (b"cache-control", b"no-store"),
        ]
        self._docs = [*common, (b"content-security-policy", _DOCS_CSP.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._docs if scope["path"].startswith(_DOCS_PATHS) else self._api

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in extra if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


# Rate limits.

# Probes must answer however busy a client is; providers' webhooks are authenticated by
# their signatures and come in bursts (a campaign's status callbacks) that a 429 would
# only turn into retries, or into the provider disabling the webhook.
RATE_LIMIT_EXEMPT = ("/healthz", "/readyz", "/metrics", "/v1/webhooks/")
# How long the limiter stays out of the way after a check failed (the Retry-After of a 503).
STAND_ASIDE_SECONDS = 5.0


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


async def _send_429(send: Send, retry_after: int) -> None:
    body = json.dumps(
        {
            "error": "rate_limited",
            "detail": f"too many requests for this API key; retry in {retry_after} s",
            "retry_after": retry_after,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RateLimitMiddleware:
    """A token bucket per API key (services/platform/rate_limit.py), checked before the request
    runs.

    The key is recognised from the process's key cache (a hash lookup in memory, no
    query); a request whose key is not cached — unknown, revoked, or this process's first
    sight of it in 10 s — counts against its client IP instead. So garbage keys cannot
    dodge the limit, and a valid key's first request is all that is counted elsewhere.
    Behind a proxy, run uvicorn with ``--proxy-headers --forwarded-allow-ips`` so the
    client IP is the caller's. A database error, or a check that takes longer than its
    budget (``CHECK_WITHIN_SECONDS``), lets the request through (fail open): the limit
    protects the service, and the request itself will meet the same database. After a
    failed check the limiter stands aside for ``STAND_ASIDE_SECONDS``, then lets one
    request at a time check again until a check succeeds, so while the database is down or
    hanging a request waits for it once, not twice; requests get through either way, so no
    limit is lost that a failing check would have kept.
    """

    def __init__(self, app: ASGIApp, *, per_minute: int, burst: int) -> None:
        self.app = app
        self.per_minute = per_minute
        self.burst = burst
        self._limiter: RateLimiter | None = None
        self._engine: Any = None
        self._warned_at = 0.0
        self._failed_at = -STAND_ASIDE_SECONDS
        self._probing = False  # after a failure, one check at a time finds out if it is over

    def _bucket(self, scope: Scope) -> str:
        token = _bearer(scope)
        cache = getattr(scope["app"].state, "key_cache", None)
        if token is not None and cache is not None:
            principal = cache.get(hash_key(token))
            if principal is not None:
                return f"key:{principal.key_id}"
        client = scope.get("client")
        return f"ip:{client[0] if client else 'unknown'}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self.per_minute <= 0
            or scope["path"].startswith(RATE_LIMIT_EXEMPT)
        ):
            await self.app(scope, receive, send)
            return
        engine = getattr(scope["app"].state, "engine", None)
        if engine is None:  # the lifespan has not started
            await self.app(scope, receive, send)
            return
        if self._limiter is None or self._engine is not engine:
            self._limiter = RateLimiter(engine, per_minute=self.per_minute, burst=self.burst)
            self._engine = engine
        failing = self._failed_at > 0
        if failing and (self._probing or time.monotonic() - self._failed_at < STAND_ASIDE_SECONDS):
            await self.app(scope, receive, send)
            return
        self._probing = failing
        try:
            decision = await self._limiter.take(self._bucket(scope))
        except Exception:
            self._failed_at = time.monotonic()
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                _log.warning("rate limit check failed; letting requests through", exc_info=True)
            decision = None
        finally:
            self._probing = False
        if decision is None:
            await self.app(scope, receive, send)
            return
        self._failed_at = -STAND_ASIDE_SECONDS
        if not decision.allowed:
            await _send_429(send, decision.retry_after)
            return
        await self.app(scope, receive, send)
