"""What `make run` installs into a fresh database: the default rules."""

from __future__ import annotations

import asyncio

from config.settings import Environment, Settings
from db.engine import create_engine, create_sessionmaker
from services.rules import ensure_default_rules


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
