"""Request dependencies: the unit-of-work session, the caller's key and its scopes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from config.settings import Settings
from contracts.errors import Forbidden, Unauthorized
from services.platform.api_keys import Principal, Scope, authenticate


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: committed when the handler returns, before the response."""
    async with request.app.state.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# scope="function": the commit happens before the response is sent, so a 2xx means durable.
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _temporal(request: Request) -> Client:
    client: Client = request.app.state.temporal
    return client


SettingsDep = Annotated[Settings, Depends(_settings)]
TemporalDep = Annotated[Client, Depends(_temporal)]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def _principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise Unauthorized(
            "missing API key: send 'Authorization: Bearer <key>'", headers=_CHALLENGE
        )
    principal = await authenticate(session, credentials.credentials, request.app.state.key_cache)
    if principal is None:
        raise Unauthorized("invalid or revoked API key", headers=_CHALLENGE)
    return principal


PrincipalDep = Annotated[Principal, Depends(_principal)]


def require(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    async def check(principal: PrincipalDep) -> Principal:
        if not principal.allows(scope):
            raise Forbidden(f"this API key lacks the '{scope}' scope", required_scope=scope)
        return principal

    return check


def require_any(*scopes: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    async def check(principal: PrincipalDep) -> Principal:
        if not any(principal.allows(scope) for scope in scopes):
            wanted = "' or '".join(scopes)
            raise Forbidden(f"this API key lacks the '{wanted}' scope", required_scope=scopes[0])
        return principal

    return check
