"""Prometheus metrics, served at GET /metrics."""

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
