"""The Alembic migrations build exactly the schema the models describe, and run down too."""

from __future__ import annotations

import secrets

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, pool

from config.settings import to_sqlalchemy_url
from db.migrate import alembic_config
from db.models import Base
from tests.conftest import create_database, drop_database


def test_migrations_match_the_models(database_url: str):
    engine = create_engine(to_sqlalchemy_url(database_url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()

    assert diff == []


def test_migrations_downgrade_and_upgrade_cleanly(admin_url: str):
    name = f"sutra_migrations_{secrets.token_hex(4)}"
    config = alembic_config(create_database(admin_url, name))
    try:
        command.upgrade(config, "head")
        command.downgrade(config, "base")
        command.upgrade(config, "head")
    finally:
        drop_database(admin_url, name)
