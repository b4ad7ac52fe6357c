"""The worker's log of failing workflow tasks: one structured line per workflow run (and
failure), not one per retry.

Temporal retries a failing workflow task forever, and the SDK tells of the failure in
two places:

- a Python exception in workflow code (a deadlock too): temporalio's "Failed activation
  on workflow ..." or "Failed handling activation ..." record, with its traceback, on
  every attempt;
- a failure the SDK core detects, nondeterminism on replay above all: core's "Failing
  workflow task" record with the run id and the failure, for the first attempt of a
  streak only, and in Python's logging only when the runtime forwards core's logs
  (``worker_runtime``; otherwise core prints it to stderr itself, unstructured).

``TaskFailureLog`` filters those loggers: it drops the SDK's records and writes one
``workflow task failing`` line per run with workflow id, type, run id and failure (again
only if the same run later fails differently). Core
names only the run, so ``RUNS`` (filled by ``RunDirectoryInterceptor`` as each run is
loaded into the worker) supplies the workflow id and type.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import structlog
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.worker import (
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

CORE_LOGGER = "temporalio.core"
_SDK_INSTANCE_LOGGER = "temporalio.worker._workflow_instance"
_SDK_WORKER_LOGGER = "temporalio.worker._workflow"
_SDK_HANDLING_FAILED = "Failed handling activation on workflow with run ID %s"
_CORE_FAILING = "Failing workflow task"
_REMEMBERED = 10_000  # runs; a worker caches far fewer (max_cached_workflows)

_log = structlog.get_logger("sutra.worker")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class RunDirectory:
    """Workflow id and type by run id, for the runs this process has loaded lately."""

    def __init__(self, size: int = _REMEMBERED) -> None:
        self._size = size
        self._runs: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, run_id: str, workflow_id: str, workflow_type: str) -> None:
        with self._lock:
            self._runs[run_id] = (workflow_id, workflow_type)
            self._runs.move_to_end(run_id)
            while len(self._runs) > self._size:
                self._runs.popitem(last=False)

    def get(self, run_id: str) -> tuple[str, str] | None:
        with self._lock:
            return self._runs.get(run_id)


RUNS = RunDirectory()


class _RememberRun(WorkflowInboundInterceptor):
    # Runs inside the workflow sandbox; this module is passed through it (worker.py), so
    # RUNS is the worker's own object. It records and issues no command: replay-safe.
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        info = outbound.info()  # workflow.info() is not available until init returns
        RUNS.remember(info.run_id, info.workflow_id, info.workflow_type)
        super().init(outbound)


class RunDirectoryInterceptor(Interceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _RememberRun


@dataclass(frozen=True)
class TaskFailure:
    run_id: str
    kind: str  # "exception" (workflow code raised) or "nondeterminism" or "other"
    error: str  # the exception type, or core's failure cause
    failure: str
    workflow_id: str | None = None
    workflow_type: str | None = None
    exc_info: ExcInfo | None = None
    # Core's record of a failure Python produced (and has logged already): not told twice.
    echo: bool = False


_QUOTED_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')
_FORCE_CAUSE = re.compile(r"force_cause: (\w+)")
_PYTHON_TYPE = re.compile(r'r#type: "[^"]+"')  # core's own failures have an empty type


def _core_failure(run_id: str, text: str) -> TaskFailure:
    """Core logs the failure as Rust debug output: take its message and cause from it."""
    found = _QUOTED_MESSAGE.search(text)
    message = (
        found.group(1).replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        if found
        else text
    )
    cause = _FORCE_CAUSE.search(text)
    error = cause.group(1) if cause else "Unspecified"
    kind = "nondeterminism" if error == "NonDeterministicError" else "other"
    # Python's failures carry the exception's type, or are encrypted (payload keys set).
    echo = kind != "nondeterminism" and (
        bool(_PYTHON_TYPE.search(text)) or message == "Encoded failure"
    )
    return TaskFailure(run_id=run_id, kind=kind, error=error, failure=message, echo=echo)


def _exception(
    run_id: str,
    exc_info: Any,
    workflow_id: str | None = None,
    workflow_type: str | None = None,
) -> TaskFailure:
    exc = exc_info[1] if isinstance(exc_info, tuple) else None
    return TaskFailure(
        run_id=run_id,
        kind="exception",
        error=type(exc).__name__ if exc else "unknown",
        failure=str(exc) if exc else "",
        workflow_id=workflow_id,
        workflow_type=workflow_type,
        exc_info=exc_info if isinstance(exc_info, tuple) else None,
    )


def classify(record: logging.LogRecord) -> TaskFailure | None:
    """The failing workflow task a record of the SDK tells of, if it tells of one."""
    if getattr(record, "__temporal_error_identifier", None) == "WorkflowTaskFailure":
        details = getattr(record, "temporal_workflow", None) or {}
        return _exception(
            str(details.get("run_id", "")),
            record.exc_info,
            workflow_id=details.get("workflow_id"),
            workflow_type=details.get("workflow_type"),
        )
    if record.name == _SDK_WORKER_LOGGER and record.msg == _SDK_HANDLING_FAILED and record.args:
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        return _exception(str(args[0]), record.exc_info)
    entry = getattr(record, "temporal_log", None)
    if entry is not None and entry.message == _CORE_FAILING:
        fields = entry.fields
        return _core_failure(str(fields.get("run_id", "")), str(fields.get("failure", "")))
    return None


class TaskFailureLog(logging.Filter):
    """Replaces the SDK's failing-task records with one line per run and failure (per
    process): a retry failing the same way is not told again."""

    def __init__(self, runs: RunDirectory, size: int = _REMEMBERED) -> None:
        super().__init__()
        self._runs = runs
        self._size = size
        self._told: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        failure = classify(record)
        if failure is None:
            return True
        if not failure.echo and self._first((failure.run_id, failure.failure)):
            self._tell(failure)
        return False

    def _first(self, key: tuple[str, str]) -> bool:
        with self._lock:
            if key in self._told:
                self._told.move_to_end(key)
                return False
            self._told[key] = None
            while len(self._told) > self._size:
                self._told.popitem(last=False)
            return True

    def _tell(self, failure: TaskFailure) -> None:
        workflow_id, workflow_type = failure.workflow_id, failure.workflow_type
        if workflow_id is None and (known := self._runs.get(failure.run_id)):
            workflow_id, workflow_type = known
        _log.error(
            "workflow task failing",
            workflow_id=workflow_id,
            workflow_type=workflow_type,
            run_id=failure.run_id,
            kind=failure.kind,
            error=failure.error,
            failure=failure.failure,
            note="Temporal retries it until the code is fixed; told once per run and failure",
            exc_info=failure.exc_info,
        )


_FILTER = TaskFailureLog(RUNS)


def install() -> None:
    """Put the filter on the SDK's loggers (once per process) and keep them at WARNING
    or below, so a quieter SUTRA_LOG_LEVEL cannot drop the records before it sees them."""
    for name in (_SDK_INSTANCE_LOGGER, _SDK_WORKER_LOGGER, CORE_LOGGER):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        if logger.getEffectiveLevel() > logging.WARNING:
            logger.setLevel(logging.WARNING)


@functools.cache
def worker_runtime(metrics: PrometheusConfig | None = None) -> Runtime:
    """The SDK runtime for a worker's client: core's warnings forwarded into Python logging
    (the default prints them to stderr), so nondeterminism reaches ``TaskFailureLog``; and
    the SDK's metrics exported where ``metrics`` says (services/platform/worker_metrics.py)."""
    return Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(
                filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                forwarding=LogForwardingConfig(logger=logging.getLogger(CORE_LOGGER)),
            ),
            metrics=metrics,
        )
    )
