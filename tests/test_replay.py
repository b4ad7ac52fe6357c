"""Determinism: every history under ``tests/histories/`` — recorded from the real workflows
by ``python -m tests.record_histories`` — replays on today's workflow code, so a change that
would break running workflows fails the build. And the procedure of CONTRIBUTING.md
("Changing workflow code"), shown to hold: an unguarded change breaks the replay of a
committed history with a NondeterminismError, the same change behind ``workflow.patched``
replays it cleanly, and a patch goes through ``deprecate_patch`` to removal.

Replaying needs no server; only the last test, which records a small demonstration
workflow at each step of a patch's life, uses the time-skipping server.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity, workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker
from temporalio.workflow import NondeterminismError

import workflows.cart
import workflows.order
from contracts.lifecycle import LifecycleInput, LifecycleState
from contracts.names import LIFECYCLE_WORKFLOW
from workflows import registry
from workflows.lifecycle import LifecycleJourneyWorkflow

HISTORIES = Path(__file__).parent / "histories"
RECORDED = sorted(p for p in HISTORIES.glob("*.json") if not p.name.startswith("_"))


def _load(path: Path) -> WorkflowHistory:
    # The workflow id is not part of a stored history, and no workflow decides anything on
    # its own id: any id replays the same.
    return WorkflowHistory.from_json(f"recorded/{path.stem}", path.read_text())


def _workflow_type(history: WorkflowHistory) -> str:
    started = history.events[0].workflow_execution_started_event_attributes
    return started.workflow_type.name


def _replayer(*classes: type) -> Replayer:
    return Replayer(workflows=list(classes), data_converter=pydantic_data_converter)


async def _failure(cls: type, history: WorkflowHistory) -> Exception | None:
    """Why ``history`` does not replay on ``cls``, or None when it does."""
    result = await _replayer(cls).replay_workflow(history, raise_on_replay_failure=False)
    return result.replay_failure


def _lifecycle_histories() -> list[WorkflowHistory]:
    histories = [_load(p) for p in RECORDED]
    return [h for h in histories if _workflow_type(h) == LIFECYCLE_WORKFLOW]


# --- every committed history replays on today's code -----------------------------------


@pytest.mark.parametrize("path", RECORDED, ids=[p.name for p in RECORDED])
async def test_a_recorded_history_replays_on_todays_workflow_code(path: Path):
    await _replayer(*registry.ALL).replay_workflow(_load(path), raise_on_replay_failure=True)


def test_every_workflow_type_has_recorded_histories_of_a_reasonable_size():
    recorded = {_workflow_type(_load(p)) for p in RECORDED}
    registered = {workflow._Definition.must_from_class(cls).name for cls in registry.ALL}
    assert registered - recorded == set(), "record them: python -m tests.record_histories"
    for path in RECORDED:
        assert path.stat().st_size < 300_000, f"{path.name}: record a shorter scenario"


# --- every workflow's code has histories recorded on it ------------------------------------

_TYPES = {str(workflow._Definition.must_from_class(c).name): c for c in registry.ALL}
_PROCEDURE = (
    "follow CONTRIBUTING.md 'Changing workflow code': put the change behind "
    "workflow.patched, add a scenario for its new path to tests/record_histories.py and "
    "record it (python -m tests.record_histories <scenario>); a change that issues the same "
    "commands (a comment, a query, a details text) is acknowledged with "
    "python -m tests.record_histories --acknowledge {type}"
)


@pytest.mark.parametrize("workflow_type", sorted(_TYPES))
def test_a_workflow_whose_code_changed_has_a_history_recorded_on_the_new_code(
    workflow_type: str,
):
    from tests import workflow_sources  # its pathlib use is not for the workflow sandbox

    changed = workflow_sources.changed_files(workflow_type, _TYPES[workflow_type])
    assert changed == [], (
        f"{workflow_type}'s code changed since its histories were recorded "
        f"({', '.join(changed)}): " + _PROCEDURE.format(type=workflow_type)
    )


def _patches_in_code(workflow_class: type) -> set[str]:
    """Every patch id the workflow's code can record: the ``workflow.patched`` calls in its
    source files, by literal or by a constant defined in one of them."""
    from tests import workflow_sources  # its pathlib use is not for the workflow sandbox

    texts = [p.read_text() for p in workflow_sources.source_files(workflow_class)]
    constants = {
        name: value
        for text in texts
        for name, value in re.findall(r'^([A-Z][A-Z0-9_]*)\s*=\s*"([a-z0-9-]+)"', text, re.M)
    }
    ids: set[str] = set()
    for text in texts:
        for literal, name in re.findall(r'patched\(\s*(?:"([a-z0-9-]+)"|([A-Z][A-Z0-9_]*))', text):
            ids.add(literal or constants[name])
    return ids


def _patches_in_histories() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in RECORDED:
        history = _load(path)
        ids = found.setdefault(_workflow_type(history), set())
        for event in history.events:
            if event.HasField("marker_recorded_event_attributes"):
                marker = event.marker_recorded_event_attributes
                if marker.marker_name == "core_patch":
                    data = json.loads(marker.details["patch-data"].payloads[0].data)
                    ids.add(data["id"])
    return found


@pytest.mark.parametrize("workflow_type", sorted(_TYPES))
def test_every_patch_a_workflow_can_take_has_a_recorded_history(workflow_type: str):
    in_code = _patches_in_code(_TYPES[workflow_type])
    recorded = _patches_in_histories().get(workflow_type, set())
    assert in_code - recorded == set(), (
        f"{workflow_type} has no history that took these patched branches: "
        f"{', '.join(sorted(in_code - recorded))}; " + _PROCEDURE.format(type=workflow_type)
    )


# --- an order stranded by the SDK, kept as evidence -----------------------------------------

STRANDED = HISTORIES / "stranded" / "order_update_after_cold_query.json"


async def test_the_stranded_order_history_fails_to_replay_as_it_did_in_production():
    """The history a worker that caches order workflows wrote when a read (a query), an
    event and an ops move reached an order while no worker ran (tests/test_order_interleavings
    .py records it): the event's effects went out ahead of the move's acceptance, and no code
    can replay that. It is why order workflows run on workers without a cache
    (services/platform/temporal.py); if this ever replays, the SDK changed and that can be
    revisited."""
    failure = await _failure(workflows.order.OrderWorkflow, _load(STRANDED))
    assert isinstance(failure, NondeterminismError)
    assert "Update machine does not handle this event" in str(failure)
    assert "TimerCanceled" in str(failure)


STRANDED_CART = HISTORIES / "stranded" / "cart_after_cold_query_in_a_crash_run.json"


async def test_a_cart_history_a_caching_worker_wrote_in_a_crash_run_fails_to_replay():
    """The same split without any update: in tests/test_crash_safety.py a cart's worker was
    SIGKILLed while its send activity ran, and the worker that took over, cold, wrote a
    history whose journey skipped a wait that a replay of the same history takes. Most
    likely it was asked one of the test's queries while the activity's completion waited
    for its workflow task, and applied it there (the test reads carts' state throughout).
    It is why the main worker caches nothing either (``SUTRA_TEMPORAL_WORKFLOW_CACHE``)."""
    failure = await _failure(workflows.cart.CartWorkflow, _load(STRANDED_CART))
    assert isinstance(failure, NondeterminismError)
    assert "Timer machine does not handle this event" in str(failure)
    assert "ActivityTaskScheduled" in str(failure)


# --- the procedure, on a real workflow and its committed histories -------------------------

# The change: a lifecycle journey waits ten minutes before entering its rule, so that an
# order placed together with the sign-up reaches it first. A new timer before the journey's
# first command (the enter_lifecycle activity) — exactly what running journeys' histories
# do not have.
PAUSE = timedelta(minutes=10)
PAUSE_PATCH = "lifecycle-pause-before-entering"


@workflow.defn(name=LIFECYCLE_WORKFLOW)
class PauseFirstUnguarded(LifecycleJourneyWorkflow):
    """The change as one would first write it."""

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleState:
        await workflow.sleep(PAUSE)
        return await super().run(input)


@workflow.defn(name=LIFECYCLE_WORKFLOW)
class PauseFirstPatched(LifecycleJourneyWorkflow):
    """The same change behind ``workflow.patched``: journeys that started before it keep
    their old path on replay; new ones take the new path (and record the patch)."""

    @workflow.run
    async def run(self, input: LifecycleInput) -> LifecycleState:
        if workflow.patched(PAUSE_PATCH):
            await workflow.sleep(PAUSE)
        return await super().run(input)


async def test_an_unguarded_change_fails_the_replay_of_committed_histories():
    histories = _lifecycle_histories()
    assert len(histories) >= 2

    for history in histories:
        failure = await _failure(PauseFirstUnguarded, history)
        assert isinstance(failure, workflow.NondeterminismError), failure
        # The code now starts a timer where the history scheduled enter_lifecycle.
        assert "Timer machine does not handle" in str(failure)
        assert "ActivityTaskScheduled" in str(failure)


async def test_the_same_change_behind_workflow_patched_replays_them_cleanly():
    histories = _lifecycle_histories()
    assert [await _failure(PauseFirstPatched, h) for h in histories] == [None] * len(histories)


# --- a patch's whole life, on a demonstration workflow -------------------------------------

GREET_PATCH = "nudge-greet-first"
MINUTE = timedelta(minutes=1)


@activity.defn(name="greet")
async def greet(name: str) -> str:
    return f"greeted {name}"


@activity.defn(name="remind")
async def remind(name: str) -> str:
    return f"reminded {name}"


@workflow.defn(name="Nudge")
class NudgeV1:
    """Shipped: a day after it starts, remind."""

    @workflow.run
    async def run(self, name: str) -> list[str]:
        await workflow.sleep(timedelta(days=1))
        return [await workflow.execute_activity(remind, name, start_to_close_timeout=MINUTE)]


@workflow.defn(name="Nudge")
class NudgeV2Unguarded:
    """Wanted: greet at once, then remind a day later. Also what v4 is, once no run from
    before the change is left."""

    @workflow.run
    async def run(self, name: str) -> list[str]:
        done = [await workflow.execute_activity(greet, name, start_to_close_timeout=MINUTE)]
        await workflow.sleep(timedelta(days=1))
        done.append(await workflow.execute_activity(remind, name, start_to_close_timeout=MINUTE))
        return done


@workflow.defn(name="Nudge")
class NudgeV2Patched:
    """Step 2 of the procedure: the change behind ``patched``; runs from before it keep
    the old path."""

    @workflow.run
    async def run(self, name: str) -> list[str]:
        done = []
        if workflow.patched(GREET_PATCH):
            done.append(await workflow.execute_activity(greet, name, start_to_close_timeout=MINUTE))
        await workflow.sleep(timedelta(days=1))
        done.append(await workflow.execute_activity(remind, name, start_to_close_timeout=MINUTE))
        return done


@workflow.defn(name="Nudge")
class NudgeV3Deprecated:
    """Step 4, once every run from before the patch has closed: the old path goes,
    ``deprecate_patch`` stays."""

    @workflow.run
    async def run(self, name: str) -> list[str]:
        workflow.deprecate_patch(GREET_PATCH)
        done = [await workflow.execute_activity(greet, name, start_to_close_timeout=MINUTE)]
        await workflow.sleep(timedelta(days=1))
        done.append(await workflow.execute_activity(remind, name, start_to_close_timeout=MINUTE))
        return done


NudgeV4 = NudgeV2Unguarded  # step 5: the call removed, once no patched() run is open


async def _record(env: WorkflowEnvironment, cls: type) -> tuple[list[str], WorkflowHistory]:
    """Run the version to completion on the time-skipping server; its result and history."""
    task_queue = f"nudge-{uuid.uuid4().hex[:8]}"
    async with Worker(
        env.client, task_queue=task_queue, workflows=[cls], activities=[greet, remind]
    ):
        handle = await env.client.start_workflow(
            "Nudge",
            "Ayesha",
            id=f"nudge/{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            result_type=list[str],
        )
        result = await handle.result()
    return result, await handle.fetch_history()


async def _fails(cls: type, history: WorkflowHistory) -> bool:
    failure = await _failure(cls, history)
    assert failure is None or isinstance(failure, workflow.NondeterminismError), failure
    return failure is not None


async def test_a_patch_from_patched_through_deprecate_patch_to_removal(
    time_skipping: WorkflowEnvironment,
):
    # Runs of v1 are out there, asleep.
    result, v1 = await _record(time_skipping, NudgeV1)
    assert result == ["reminded Ayesha"]

    # The change as first written breaks them; behind patched() it does not, while new
    # runs take the new path and record the patch.
    assert await _fails(NudgeV2Unguarded, v1)
    assert not await _fails(NudgeV2Patched, v1)
    result, v2 = await _record(time_skipping, NudgeV2Patched)
    assert result == ["greeted Ayesha", "reminded Ayesha"]
    assert not await _fails(NudgeV2Patched, v2)

    # deprecate_patch only once no v1 run is left: it would break them.
    assert await _fails(NudgeV3Deprecated, v1)
    assert not await _fails(NudgeV3Deprecated, v2)
    result, v3 = await _record(time_skipping, NudgeV3Deprecated)
    assert result == ["greeted Ayesha", "reminded Ayesha"]

    # Removing the call: runs that recorded the deprecated patch replay without it; runs
    # that recorded patched() do not, so the call goes only once they have all closed.
    assert not await _fails(NudgeV4, v3)
    assert await _fails(NudgeV4, v2)
