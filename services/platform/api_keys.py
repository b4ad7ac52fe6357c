"""API keys: generated once, shown once, stored as a SHA-256 hash, carrying scopes."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ApiKey

Scope = Literal["events:write", "rules:write", "rules:read", "analytics:read", "ops", "admin"]
SCOPES: tuple[str, ...] = get_args(Scope)
KEY_PREFIX = "sutra_"
_LAST_USED_GRANULARITY = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    key_id: uuid.UUID
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def display_prefix(plaintext: str) -> str:
    return plaintext[:12]


async def create_key(
    session: AsyncSession, *, name: str, scopes: list[str], created_by: uuid.UUID | None
) -> tuple[ApiKey, str]:
    plaintext = generate_key()
    key = ApiKey(
        name=name,
        key_hash=hash_key(plaintext),
        prefix=display_prefix(plaintext),
        scopes=sorted(set(scopes)),
        created_by=created_by,
    )
    session.add(key)
    await session.flush()
    await session.refresh(key)
    return key, plaintext


async def ensure_bootstrap_key(session: AsyncSession, plaintext: str) -> None:
    """Make this exact key exist, unrevoked, with the admin scope."""
    stmt = insert(ApiKey).values(
        id=uuid.uuid4(),
        name="bootstrap admin",
        key_hash=hash_key(plaintext),
        prefix=display_prefix(plaintext),
        scopes=["admin"],
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[ApiKey.key_hash],
        set_={"scopes": ["admin"], "revoked_at": None},
    )
    await session.execute(stmt)


class KeyCache:
    """Per-process memory of recently authenticated keys.

    Saves a database round trip on every request. A key revoked through this process is
    forgotten at once; other processes stop accepting it within ``ttl``.
    """

    def __init__(self, ttl: timedelta = timedelta(seconds=10)) -> None:
        self._ttl = ttl.total_seconds()
        self._principals: dict[str, tuple[Principal, float]] = {}
        self._written: dict[uuid.UUID, datetime] = {}

    def get(self, key_hash: str) -> Principal | None:
        hit = self._principals.get(key_hash)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put(self, key_hash: str, principal: Principal) -> None:
        if len(self._principals) > 10_000:  # a flood of distinct keys must not grow memory
            self._principals.clear()
        self._principals[key_hash] = (principal, time.monotonic() + self._ttl)

    def forget(self, key_id: uuid.UUID) -> None:
        self._principals = {h: v for h, v in self._principals.items() if v[0].key_id != key_id}

    def last_used_due(self, key_id: uuid.UUID, now: datetime) -> bool:
        """Write last_used_at at most once a minute per key: it must not cost every request."""
        last = self._written.get(key_id)
        if last is not None and now - last < _LAST_USED_GRANULARITY:
            return False
        self._written[key_id] = now
        return True


async def authenticate(session: AsyncSession, plaintext: str, cache: KeyCache) -> Principal | None:
    key_hash = hash_key(plaintext)
    principal = cache.get(key_hash)
    if principal is None:
        # The lookup is by hash, so response timing says nothing about the key's characters.
        row = (
            await session.execute(
                select(ApiKey.id, ApiKey.name, ApiKey.scopes).where(
                    ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)
                )
            )
        ).one_or_none()
        if row is None:
            return None
        principal = Principal(key_id=row.id, name=row.name, scopes=frozenset(row.scopes))
        cache.put(key_hash, principal)
    now = datetime.now(UTC)
    if cache.last_used_due(principal.key_id, now):
        await session.execute(
            update(ApiKey).where(ApiKey.id == principal.key_id).values(last_used_at=now)
        )
    return principal


async def principal_of(session: AsyncSession, key_id: uuid.UUID) -> Principal | None:
    """The key with this id as a principal, unless it is revoked (or never existed): what a
    dashboard session, which keeps the key's id and never the key, is checked against on
    every page, so revoking a key ends its sessions at once."""
    row = (
        await session.execute(
            select(ApiKey.id, ApiKey.name, ApiKey.scopes).where(
                ApiKey.id == key_id, ApiKey.revoked_at.is_(None)
            )
        )
    ).one_or_none()
    if row is None:
        return None
    return Principal(key_id=row.id, name=row.name, scopes=frozenset(row.scopes))


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    return list((await session.scalars(select(ApiKey).order_by(ApiKey.created_at))).all())


async def revoke_key(session: AsyncSession, key_id: uuid.UUID) -> ApiKey | None:
    key = await session.get(ApiKey, key_id)
    if key is not None and key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
    return key
