"""What `make run` installs into a fresh database: the default rules, and the ops key the
development Temporal UI uses to reach the codec endpoint."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy.dialects.postgresql import insert

from config.settings import Environment, Settings
from db.engine import create_engine, create_sessionmaker
from db.models import ApiKey
from services.journeys.rules import ensure_default_rules
from services.platform.api_keys import display_prefix, hash_key


async def _install(database_url: str) -> str | None:
    engine = create_engine(Settings(env=Environment.development, database_url=database_url))
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            rule = await ensure_default_rules(session)
            return rule.id if rule else None
    finally:
        await engine.dispose()


def install_default_rules(database_url: str) -> str | None:
    """Install the default abandoned-cart rule once; return its id when just installed."""
    return asyncio.run(_install(database_url))


CODEC_KEY_NAME = "temporal ui codec (make run)"


async def _ensure_codec_key(database_url: str, plaintext: str) -> None:
    engine = create_engine(Settings(env=Environment.development, database_url=database_url))
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            stmt = insert(ApiKey).values(
                id=uuid.uuid4(),
                name=CODEC_KEY_NAME,
                key_hash=hash_key(plaintext),
                prefix=display_prefix(plaintext),
                scopes=["ops"],
            )
            await session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[ApiKey.key_hash], set_={"scopes": ["ops"], "revoked_at": None}
                )
            )
    finally:
        await engine.dispose()


def ensure_codec_key(database_url: str, plaintext: str) -> None:
    """Make this exact key exist with the ops scope only (it sits in the UI's settings)."""
    asyncio.run(_ensure_codec_key(database_url, plaintext))
