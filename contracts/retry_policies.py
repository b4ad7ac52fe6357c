"""The retry policies Sutra's workflows schedule their activities with, by name.

A policy is part of the ``ScheduleActivityTask`` command a workflow issues, so it is written
into every history: change a value here and running workflows replay through the new one
(tests/test_replay.py says whether that is safe). A new need is a new name, not an edit.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# Sutra's own activities (the database, starting workflows): retried until they succeed,
# never more than a minute apart, so a database back from an outage is used within a minute.
ACTIVITY_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))

# Sending a message through a provider: a provider's outage tends to last minutes.
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
)

# The payment provider (links, refunds).
PROVIDER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=5)
)

# The shop's endpoint may be down for a while: keep trying for days, not minutes.
SHOP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=10), maximum_interval=timedelta(hours=1)
)

# A job that may fail and wait for its next turn (the sweep's hourly A/B judgement).
FEW_ATTEMPTS = RetryPolicy(maximum_attempts=3)
