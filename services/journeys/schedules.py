"""Temporal Schedules Sutra keeps: the hourly time-trigger sweep.

A Schedule rather than a cron loop in the worker: Temporal starts each run even if no
worker is up at the tick (the run waits in the queue), never starts one while the previous
is still going (overlap SKIP), and after an outage starts the missed runs within the
catch-up window; the sweep itself makes a late or repeated run harmless.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError

from config.settings import Settings
from contracts.names import SWEEP_WORKFLOW
from contracts.sweeps import SweepInput

log = logging.getLogger(__name__)

TIME_TRIGGER_SCHEDULE = "sutra-time-triggers"
# Long enough to ride out a day's outage; each catch-up run is cheap (claims skip the done).
CATCHUP_WINDOW = timedelta(days=1)


def time_trigger_schedule(settings: Settings) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            SWEEP_WORKFLOW,
            SweepInput(),  # now: the run's start; every active time rule
            id="time-triggers/sweep",  # the server appends the tick's time
            task_queue=settings.temporal_task_queue,
            static_summary="Hourly sweep: birthdays, anniversaries, win-backs, replenishments",
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=settings.time_trigger_sweep_every)]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=CATCHUP_WINDOW),
    )


async def ensure_time_trigger_schedule(client: Client, settings: Settings) -> None:
    """Create the Schedule, or bring an existing one up to these settings; with
    ``SUTRA_TIME_TRIGGER_SWEEP_EVERY=0`` remove it. A server that refuses (no Schedules,
    no permission) is logged, not fatal: the worker still serves every other journey."""
    handle = client.get_schedule_handle(TIME_TRIGGER_SCHEDULE)
    try:
        if settings.time_trigger_sweep_every <= timedelta(0):
            with contextlib.suppress(RPCError):  # not there: nothing to remove
                await handle.delete()
            return
        schedule = time_trigger_schedule(settings)
        try:
            await client.create_schedule(TIME_TRIGGER_SCHEDULE, schedule)
            log.info("created schedule %s", TIME_TRIGGER_SCHEDULE)
        except ScheduleAlreadyRunningError:

            def replace(current: ScheduleUpdateInput) -> ScheduleUpdate:
                # Keep what ops changed by hand (paused, a note); take spec, action, policy.
                schedule.state = current.description.schedule.state
                return ScheduleUpdate(schedule=schedule)

            await handle.update(replace)
    except RPCError as error:
        log.warning("time-trigger schedule not ensured (%s): time triggers will not run", error)
