"""The time an activity acts at."""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio import activity


def server_now() -> datetime:
    """The server's clock for this attempt: on the time-skipping test server, the time it
    has skipped to, which the machine's clock knows nothing of."""
    return max(activity.info().current_attempt_scheduled_time, datetime.now(UTC))
