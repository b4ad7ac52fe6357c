"""Each wait on a PostgreSQL that hangs gives up on its own deadline (db/engine.py), on the
engine every Sutra process uses, behind a proxy that stalls: a statement already on its
way, a pooled connection's pre-ping, a new connection, and a wait cancelled from outside
(an activity's timeout, a request's budget), which psycopg alone would follow with a cancel
request and up to 10 s more of waiting. Afterwards the pool serves again as if nothing
happened. (tests/test_db_hang.py shows what this means for the API, worker and
dispatcher.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import Environment, Settings
from db.engine import ANSWER_GRACE_SECONDS, create_engine
from tests.processes import proxy_for, through

CONNECT = STATEMENT = 2.0
SLACK = 1.5  # two busy CPUs


async def _select(engine: AsyncEngine, sql: str = "SELECT 1") -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql))).scalar()


async def _timed(work: Awaitable[Any]) -> tuple[float, BaseException | None]:
    began = time.monotonic()
    try:
        await work
    except BaseException as exc:  # the outcome is what is measured
        return time.monotonic() - began, exc
    return time.monotonic() - began, None


async def test_every_wait_on_a_silent_database_gives_up_in_time_and_the_pool_recovers(
    database_url: str,
):
    proxy = proxy_for(database_url).start()
    engine = create_engine(
        Settings(
            env=Environment.test,
            database_url=through(database_url, proxy),
            database_pool_size=2,
            database_connect_timeout=timedelta(seconds=CONNECT),
            database_statement_timeout=timedelta(seconds=STATEMENT),
        )
    )
    try:
        assert list(await asyncio.gather(_select(engine), _select(engine))) == [1, 1]
        # Merely slow: the server cancels it at statement_timeout and the connection lives.
        with pytest.raises(OperationalError, match="statement timeout"):
            await _select(engine, "SELECT pg_sleep(30)")

        proxy.stall()  # both pooled connections idle: the pre-ping meets it
        seconds, error = await _timed(_select(engine))
        assert "did not answer within 2 s" in str(error), error
        assert seconds < CONNECT + SLACK
        proxy.resume()

        in_flight = asyncio.create_task(_timed(_select(engine, "SELECT pg_sleep(0.5)")))
        await asyncio.sleep(0.2)
        proxy.stall()
        seconds, error = await in_flight
        assert "did not answer within 3 s" in str(error), error
        assert seconds < STATEMENT + ANSWER_GRACE_SECONDS + SLACK

        # That connection dropped, SQLAlchemy retires the others: new ones are tried.
        seconds, error = await _timed(_select(engine))
        assert "connection timeout expired" in str(error), error
        assert seconds < CONNECT + SLACK

        seconds, error = await _timed(asyncio.wait_for(_select(engine), 0.5))
        assert isinstance(error, TimeoutError), error
        assert seconds < 0.5 + SLACK

        proxy.resume()
        assert await asyncio.gather(*(_select(engine) for _ in range(4))) == [1] * 4
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()
        proxy.kill()
