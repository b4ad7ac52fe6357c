"""Dashboard sessions: an API key signs in once through a form; the browser then holds a
cookie signed with itsdangerous (``settings.secret_key``) that carries the key's id, never
the key, and a CSRF token bound to the session.

Every page looks the key up by id (``api_keys.principal_of``), so a revoked key's sessions
stop at the next page. The cookie is HttpOnly, SameSite=Lax, Secure behind an https
``SUTRA_PUBLIC_URL``, and expires after ``MAX_AGE`` (also enforced from the signature's
timestamp, whatever the browser keeps).
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.ext.asyncio import AsyncSession

from config.settings import Settings
from services.platform.api_keys import Principal, principal_of

COOKIE = "sutra_dashboard"
PRE_COOKIE = "sutra_dashboard_signin"  # the sign-in form's CSRF token, before any session
MAX_AGE = timedelta(hours=12)
SIGN_IN_MAX_AGE = timedelta(hours=1)
REQUIRED = "analytics:read"


@dataclass(frozen=True)
class Signed:
    """A signed-in browser: the key it signed in with and the session's CSRF token."""

    principal: Principal
    csrf: str


class NotSignedIn(Exception):
    """No session, an expired or forged cookie, or a key revoked since sign-in."""

    def __init__(self, reason: str | None) -> None:
        self.reason = reason


class MissingScope(Exception):
    """The signed-in key lacks the scope a page needs."""

    def __init__(self, who: Signed, scope: str) -> None:
        self.who = who
        self.scope = scope


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _serializer(settings: Settings, salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key.get_secret_value(), salt=salt)


def secure(settings: Settings) -> bool:
    return settings.public_url.startswith("https://")


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The page's session; committed when the page is rendered (reads; the sign-in's
    last-used stamp)."""
    async with request.app.state.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


DbSession = Annotated[AsyncSession, Depends(db_session, scope="function")]


def start_session(response: Response, settings: Settings, principal: Principal) -> None:
    token = _serializer(settings, "dashboard-session").dumps(
        {"key": str(principal.key_id), "csrf": secrets.token_urlsafe(24)}
    )
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(MAX_AGE.total_seconds()),
        path="/dashboard",
        secure=secure(settings),
        httponly=True,
        samesite="lax",
    )
    response.delete_cookie(PRE_COOKIE, path="/dashboard")


def end_session(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        COOKIE, path="/dashboard", secure=secure(settings), httponly=True, samesite="lax"
    )


def sign_in_token(response: Response, settings: Settings) -> str:
    """A fresh CSRF token for the sign-in form, kept in a short-lived signed cookie of its
    own, so a foreign page cannot sign a browser in with the foreign page's key."""
    token = secrets.token_urlsafe(24)
    response.set_cookie(
        PRE_COOKIE,
        _serializer(settings, "dashboard-sign-in").dumps(token),
        max_age=int(SIGN_IN_MAX_AGE.total_seconds()),
        path="/dashboard",
        secure=secure(settings),
        httponly=True,
        samesite="lax",
    )
    return token


def sign_in_token_ok(request: Request, given: str) -> bool:
    raw = request.cookies.get(PRE_COOKIE)
    if not raw or not given:
        return False
    try:
        expected = _serializer(_settings(request), "dashboard-sign-in").loads(
            raw, max_age=int(SIGN_IN_MAX_AGE.total_seconds())
        )
    except BadSignature:
        return False
    return isinstance(expected, str) and hmac.compare_digest(expected, given)


async def signed(request: Request, session: DbSession) -> Signed:
    """The signed-in key, or ``NotSignedIn`` (the router sends the browser to sign in)."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        raise NotSignedIn(None)
    try:
        data = _serializer(_settings(request), "dashboard-session").loads(
            raw, max_age=int(MAX_AGE.total_seconds())
        )
        key_id = uuid.UUID(data["key"])
        csrf = str(data["csrf"])
    except (BadSignature, KeyError, TypeError, ValueError):
        raise NotSignedIn("Your session has expired. Sign in again.") from None
    principal = await principal_of(session, key_id)
    if principal is None:
        raise NotSignedIn("The key this session used was revoked. Sign in with another key.")
    return Signed(principal, csrf)


SignedDep = Annotated[Signed, Depends(signed)]


def needs(scope: str) -> Callable[[Signed], Awaitable[Signed]]:
    async def check(who: SignedDep) -> Signed:
        if not who.principal.allows(scope):
            raise MissingScope(who, scope)
        return who

    return check


def csrf_ok(who: Signed, given: str) -> bool:
    return bool(given) and hmac.compare_digest(who.csrf, given)
