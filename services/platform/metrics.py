"""Prometheus metrics, served at the API's GET /metrics and at the worker's
(services/platform/worker_metrics.py)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("sutra_events_total", "Events received, by type and outcome", ["type", "outcome"])
ROUTES = Counter(
    "sutra_event_routes_total",
    "Event deliveries to workflows, by workflow type and outcome",
    ["workflow_type", "outcome"],
)
ROUTE_LAG = Gauge(
    "sutra_event_routes_oldest_pending_seconds",
    "Age of the oldest event delivery still waiting for Temporal",
)
DISPATCHER_LEADER = Gauge(
    "sutra_dispatcher_leader", "1 while this process is the one delivering events to Temporal"
)
TEMPORAL_UP = Gauge(
    "sutra_dispatcher_temporal_reachable", "0 while the dispatcher cannot reach Temporal"
)
REQUEST_SECONDS = Histogram(
    "sutra_http_request_seconds",
    "HTTP request latency by route template and status",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5),
)
WEBHOOKS = Counter(
    "sutra_webhooks_total",
    "Provider webhook deliveries by source and outcome",
    ["source", "outcome"],
)
STRANDED = Gauge(
    "sutra_stranded_workflows",
    "Running workflows whose workflow tasks keep failing (Temporal's TemporalReportedProblems),"
    " by workflow type; the same in every API process",
    ["workflow_type"],
)
STRANDED_CHECKED = Gauge(
    "sutra_stranded_workflows_checked_timestamp_seconds",
    "When this process last counted stranded workflows (stale: Temporal not answering)",
)

# Messages, providers and journeys: counted in the process that does the work, the worker
# for sends and journeys, the API for provider reports (webhooks).
MESSAGES = Counter(
    "sutra_messages_total",
    "Message ledger changes by channel (none: suppressed before one was chosen) and status:"
    " sending, sent, deferred, suppressed, failed; delivered, opened, clicked, bounced as"
    " providers report them",
    ["channel", "status"],
)
PROVIDER_SECONDS = Histogram(
    "sutra_provider_call_seconds",
    "Calls to message and payment providers, by provider and operation",
    ["provider", "operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PROVIDER_ERRORS = Counter(
    "sutra_provider_errors_total",
    "Provider calls that failed, by provider, operation and kind (permanent: refused for"
    " good; transient: retried; unexpected)",
    ["provider", "operation", "kind"],
)
JOURNEY_STARTS = Counter(
    "sutra_journey_starts_total",
    "Journeys that entered a rule (test runs aside), by rule",
    ["rule_id"],
)
JOURNEY_EXITS = Counter(
    "sutra_journey_exits_total",
    "Journeys that left their rule (test runs aside), by rule and reason",
    ["rule_id", "reason"],
)


def message(channel: str | None, status: str) -> None:
    MESSAGES.labels(channel or "none", status).inc()


@contextlib.contextmanager
def provider_call(
    provider: str, operation: str, kind: Callable[[BaseException], str]
) -> Iterator[None]:
    """Time one provider call; an exception is counted as an error of ``kind(exc)``."""
    started = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        failed = kind(exc) if isinstance(exc, Exception) else "cancelled"
        PROVIDER_ERRORS.labels(provider, operation, failed).inc()
        raise
    finally:
        PROVIDER_SECONDS.labels(provider, operation).observe(time.perf_counter() - started)
