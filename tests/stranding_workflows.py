"""Workflows that strand on purpose, for tests/test_stranded_workflows.py.

``BuggyWorkflow`` raises from workflow code when poked: a Python exception fails the
workflow task (not the workflow), and every retry fails the same way.

``RecordedWorkflow`` and ``ChangedWorkflow`` are one workflow type before and after an
unguarded code change: the recorded code starts a timer before it waits for the poke, the
changed code does not. A run recorded by the first and replayed by the second fails every
workflow task with a nondeterminism error, as a deploy without ``workflow.patched`` would.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

POKE = "poke"


class _Poked:
    def __init__(self) -> None:
        self.poked = False

    @workflow.signal(name=POKE)
    def poke(self) -> None:
        self.poked = True


@workflow.defn(name="StrandingBuggy")
class BuggyWorkflow(_Poked):
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.poked)
        raise RuntimeError("order total is not a number: 'abc'")


@workflow.defn(name="StrandingChanged")
class RecordedWorkflow(_Poked):
    @workflow.run
    async def run(self) -> None:
        await workflow.sleep(timedelta(milliseconds=10))
        await workflow.wait_condition(lambda: self.poked)


@workflow.defn(name="StrandingChanged")
class ChangedWorkflow(_Poked):
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.poked)
