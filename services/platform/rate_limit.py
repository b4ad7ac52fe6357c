"""Per-key request rate limits, shared by every API process through PostgreSQL.

A token bucket per API key (or per client IP for requests without a known key), kept as
GCRA's "theoretical arrival time" (``tat``) in the unlogged ``rate_limits`` table. One
request costs one ``INSERT … ON CONFLICT DO UPDATE … WHERE`` statement in autocommit: the
update only happens when the bucket has a token, so a refused request consumes nothing;
the same statement reads the old ``tat`` for the ``Retry-After``.

Why PostgreSQL and not process memory: several API processes serve the same keys, and an
in-process bucket would let each of them grant the full rate (the limit would multiply by
the process count, and change whenever the deployment scales). The database is already on
every request's path; the statement is one round trip on a single primary-key row, and
the table is unlogged (no WAL; a crash only forgets the buckets, i.e. refills them).

Semantics: ``per_minute`` tokens refill continuously (one every ``60/per_minute`` s) up
to ``burst``; a fresh or idle bucket admits ``burst`` requests at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

# The old tat comes from the statement's snapshot, i.e. from before its own update.
_TAKE = text(
    """
    WITH taken AS (
        INSERT INTO rate_limits AS r (bucket, tat)
        VALUES (:bucket, statement_timestamp() + :interval)
        ON CONFLICT (bucket) DO UPDATE
            SET tat = GREATEST(r.tat, statement_timestamp()) + :interval
            WHERE GREATEST(r.tat, statement_timestamp()) + :interval
                  <= statement_timestamp() + :tolerance
        RETURNING r.tat
    )
    SELECT
        (SELECT count(*) FROM taken) AS allowed,
        EXTRACT(EPOCH FROM (
            GREATEST((SELECT tat FROM rate_limits WHERE bucket = :bucket), statement_timestamp())
            + :interval - :tolerance - statement_timestamp()
        )) AS wait
    """
)
_SWEEP = text("DELETE FROM rate_limits WHERE tat < statement_timestamp() - interval '1 minute'")
_SWEEP_EVERY = 300.0
# The check is one statement on one row. When it cannot be done in this time the database
# is overloaded or not answering, and the request goes on unlimited (the caller fails open)
# instead of waiting twice, here and again for its own queries.
CHECK_WITHIN_SECONDS = 1.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0  # whole seconds, at least 1 when refused


class RateLimiter:
    def __init__(self, engine: AsyncEngine, *, per_minute: int, burst: int) -> None:
        # Autocommit: one round trip, no BEGIN/COMMIT around the statement.
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.interval = timedelta(seconds=60 / per_minute)
        self.tolerance = self.interval * burst
        self._swept_at = time.monotonic()

    async def take(self, bucket: str) -> Decision:
        """Take one token from ``bucket``; a refusal says how long until one is free."""
        async with asyncio.timeout(CHECK_WITHIN_SECONDS), self._engine.connect() as conn:
            row = (
                await conn.execute(
                    _TAKE,
                    {"bucket": bucket, "interval": self.interval, "tolerance": self.tolerance},
                )
            ).one()
            if time.monotonic() - self._swept_at > _SWEEP_EVERY:
                self._swept_at = time.monotonic()
                await conn.execute(_SWEEP)  # buckets idle long enough are full: forget them
        if row.allowed:
            return Decision(True)
        wait = float(row.wait) if row.wait is not None else self.interval.total_seconds()
        return Decision(False, max(1, math.ceil(wait)))
