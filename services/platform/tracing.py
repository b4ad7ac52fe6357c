"""OpenTelemetry traces of Sutra's Temporal work, when ``SUTRA_OTLP_ENDPOINT`` is set.

``temporalio.contrib.opentelemetry.TracingInterceptor`` on every Temporal client Sutra
connects (services/platform/temporal.py), and so on the workers built from the worker's:
a span for each workflow start and signal the API's dispatcher makes, for each workflow run
(``RunWorkflow:<type>``), each activity it schedules (``StartActivity:<name>``) and runs
(``RunActivity:<name>``), parented across processes through Temporal headers. Spans go to
the OTLP/HTTP endpoint in batches. Workflows started without a traced caller (schedules,
the CLI) get spans of their own too (``always_create_workflow_spans``); a workflow span
re-created on replay may then stand without its parent.

OpenTelemetry is an optional extra (``pip install 'sutra[otel]'``): without the endpoint
nothing of it is imported.
"""

from __future__ import annotations

import threading
from typing import Any

from config.settings import Settings

_lock = threading.Lock()
_providers: dict[tuple[str, str], Any] = {}


def _missing() -> RuntimeError:
    return RuntimeError(
        "SUTRA_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
        "pip install 'sutra[otel]' (opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http)"
    )


def provider(settings: Settings) -> Any | None:
    """This process's tracer provider for the configured endpoint, made once; None when
    tracing is off."""
    if not settings.otlp_endpoint:
        return None
    key = (settings.otlp_endpoint, settings.otlp_service_name)
    with _lock:
        if key not in _providers:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
                from opentelemetry.sdk.resources import Resource
                from opentelemetry.sdk.trace import TracerProvider
                from opentelemetry.sdk.trace.export import BatchSpanProcessor
            except ImportError as exc:
                raise _missing() from exc
            made = TracerProvider(
                resource=Resource.create({"service.name": settings.otlp_service_name})
            )
            made.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
            )
            _providers[key] = made
        return _providers[key]


def interceptor(tracer_provider: Any) -> Any:
    """The Temporal interceptor tracing through ``tracer_provider`` (any OpenTelemetry SDK
    tracer provider: the OTLP one, or a test's in-memory one)."""
    try:
        from temporalio.contrib.opentelemetry import TracingInterceptor
    except ImportError as exc:
        raise _missing() from exc
    return TracingInterceptor(
        tracer_provider.get_tracer("sutra"), always_create_workflow_spans=True
    )


def interceptors(settings: Settings) -> list[Any]:
    """What a Temporal client of Sutra's is connected with: the tracing interceptor when an
    OTLP endpoint is configured, else nothing."""
    found = provider(settings)
    return [] if found is None else [interceptor(found)]


def flush(timeout_millis: int = 5000) -> None:
    """Send the spans still batched (before a process exits without atexit hooks)."""
    with _lock:
        providers = list(_providers.values())
    for each in providers:
        each.force_flush(timeout_millis)
