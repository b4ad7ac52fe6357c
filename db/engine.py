"""Engine and session factory. Services never commit; the caller that owns the unit of work does.

No wait on PostgreSQL is unbounded. A database that hangs (a stuck server, a proxy or path
that accepts and then delivers nothing) sends no error for TCP to notice: the kernel or
proxy at the far end keeps ACKing, so TCP keepalives and ``tcp_user_timeout`` never fire,
and a query would wait for its answer forever. So every wait has a deadline of its own:

- opening a connection: ``SUTRA_DATABASE_CONNECT_TIMEOUT`` (libpq's ``connect_timeout``);
- a free connection from the pool: ``SUTRA_DATABASE_POOL_TIMEOUT``;
- a pooled connection's pre-ping on checkout: the connect timeout again (a server that
  cannot answer ``;`` in that time is not answering); a ping with no answer fails the
  checkout at once instead of trying a new connection, which would only wait again;
- every round trip on an open connection (statement, commit, rollback):
  ``SUTRA_DATABASE_STATEMENT_TIMEOUT`` plus a second. The server is given the same
  ``statement_timeout``, so a statement that is merely slow is cancelled there first and
  answered with an error; only a silent server reaches the client's deadline.

A wait that reaches its deadline, or is cancelled (an activity's timeout, a request's
budget), closes the connection on the spot, without the cancel request psycopg would send
first: that request is a new connection to the same silent server, and psycopg would then
wait up to 10 s more for the query to end. SQLAlchemy sees the connection closed, drops it
and retires the pool's older connections (each is replaced when next taken), so nothing
broken is handed out again; whatever the transaction had done is rolled back by the
server, or committed wholly if its COMMIT had already got there.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import waiting
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from config.settings import Settings

# How much longer than the server's statement_timeout the client waits for an answer.
ANSWER_GRACE_SECONDS = 1.0
_FRESH = "sutra_fresh"  # a connection just opened needs no ping


class DatabaseNotAnswering(psycopg.OperationalError):
    """The server took no notice of a request within its deadline; the connection is closed."""


class BoundedConnection(psycopg.AsyncConnection[Any]):
    """A psycopg connection whose every wait on the server has a deadline (see above).

    ``wait`` is where psycopg waits for the socket on every query, commit and fetch; a
    caller that passes its own timeout (``notifies(timeout=...)``) keeps psycopg's meaning.
    """

    answer_timeout: float | None = None
    _answer_within: float | None = None

    @contextlib.contextmanager
    def answering_within(self, seconds: float) -> Iterator[None]:
        """A shorter deadline for the round trips inside the block (the pre-ping)."""
        self._answer_within = seconds
        try:
            yield
        finally:
            self._answer_within = None

    async def wait(
        self,
        gen: Any,
        interval: float = 0.1,
        timeout: float | None = None,  # noqa: ASYNC109 (psycopg's signature)
    ) -> Any:
        limit = self._answer_within or self.answer_timeout
        if timeout is not None or limit is None:
            return await super().wait(gen, interval, timeout)
        try:
            async with asyncio.timeout(limit):
                return await waiting.wait_async(gen, self.pgconn.socket, interval=interval)
        except TimeoutError:
            self.pgconn.finish()
            raise DatabaseNotAnswering(
                f"PostgreSQL did not answer within {limit:g} s; connection closed"
            ) from None
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            # Interrupted mid-protocol: the connection's state is unknown, and a cancel
            # request could hang like the query did. The server's statement_timeout (or the
            # closed socket) ends the statement.
            self.pgconn.finish()
            raise


def libpq_url(url: str) -> str:
    """The URL as libpq spells it (no SQLAlchemy driver suffix)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def connect_timeout_seconds(settings: Settings) -> int:
    # libpq counts whole seconds and treats anything under 2 as 2.
    return max(2, math.ceil(settings.database_connect_timeout.total_seconds()))


async def connect(settings: Settings, *, autocommit: bool = False) -> BoundedConnection:
    """A new connection with Sutra's deadlines: the engine's, and the dispatcher's own."""
    if not settings.database_url:
        raise RuntimeError("no database configured: set DATABASE_URL")
    conn = await BoundedConnection.connect(
        libpq_url(settings.database_url),
        autocommit=True,
        connect_timeout=connect_timeout_seconds(settings),
    )
    conn.answer_timeout = settings.database_statement_timeout.total_seconds() + ANSWER_GRACE_SECONDS
    try:
        # A statement rather than a startup option (-c in "options"): PgBouncer refuses
        # startup options it does not track, and would refuse the connection.
        statement_ms = round(settings.database_statement_timeout.total_seconds() * 1000)
        # JIT off: it pays off only for long analytical scans, and PostgreSQL judges by cost
        # estimates, so an analytics query over the ledger spent 1.7 s compiling to run in
        # 0.1 s (bench/analytics.py). Every query Sutra runs is short.
        await conn.execute(
            "SELECT set_config('statement_timeout', %s, false), set_config('jit', 'off', false)",
            (f"{statement_ms}ms",),
        )
        if not autocommit:
            await conn.set_autocommit(False)
    except BaseException:
        await conn.close()
        raise
    return conn


def create_engine(settings: Settings) -> AsyncEngine:
    async def creator() -> BoundedConnection:
        return await connect(settings)

    engine = create_async_engine(
        settings.sqlalchemy_url,
        async_creator=creator,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_timeout=settings.database_pool_timeout.total_seconds(),
        pool_recycle=1800,
    )
    _ping_on_checkout(engine, within=float(connect_timeout_seconds(settings)))
    return engine


def _ping_on_checkout(engine: AsyncEngine, *, within: float) -> None:
    """SQLAlchemy's pre-ping, with a deadline: connections dropped while idle (a restart, a
    failover) are replaced transparently; a ping with no answer fails the checkout."""
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _fresh(_dbapi_connection: Any, record: Any) -> None:
        record.info[_FRESH] = True

    @event.listens_for(sync_engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if record.info.pop(_FRESH, False):
            return
        driver: BoundedConnection = dbapi_connection.driver_connection
        try:
            with driver.answering_within(within):
                sync_engine.dialect.do_ping(dbapi_connection)
        except DatabaseNotAnswering:
            raise  # the pool drops this connection; a new one would only wait again
        except psycopg.Error as error:
            if driver.closed:  # dropped while idle: so is every other pooled one
                raise exc.InvalidatePoolError() from error
            raise


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
