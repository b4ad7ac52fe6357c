"""OpenTelemetry traces through temporalio.contrib.opentelemetry: a workflow started by a
traced client, its run, the activity it schedules and the activity's run form one tree,
across the client, the workflow sandbox and the activity worker; and with
``SUTRA_OTLP_ENDPOINT`` set, the same spans reach an OTLP/HTTP collector."""

from __future__ import annotations

import uuid
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pytest_httpserver import HTTPServer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from config.settings import Settings
from contracts.messages import MessageRequest
from services.platform import tracing
from services.platform.temporal import connect
from tests.factories import CART_CONTEXT, uid
from tests.messaging_workflow import MessageTestInput, MessageTestWorkflow
from worker import build_worker


async def _one_message(client: Client, settings: Settings, sessionmaker: Any) -> str:
    """A workflow that sends one message (one send_message activity), run to its end."""
    workflow_id = f"traced/{uuid.uuid4().hex[:8]}"
    request = MessageRequest(
        key=f"{workflow_id}/step-1",
        customer_id=uid("c"),
        channels=["email"],
        template="cart_reminder_1",
        context=CART_CONTEXT,
        quiet_hours=None,
        frequency_cap=None,
        workflow_id=workflow_id,
    )
    worker = build_worker(
        client,
        settings.temporal_task_queue,
        sessionmaker,
        settings,
        extra_workflows=[MessageTestWorkflow],
    )
    async with worker:
        await client.execute_workflow(
            MessageTestWorkflow.run,
            MessageTestInput(customer_id=request.customer_id, requests=[request]),
            id=workflow_id,
            task_queue=settings.temporal_task_queue,
        )
    return workflow_id


async def test_a_workflow_and_its_activity_form_one_trace(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = await connect(settings, interceptors=[tracing.interceptor(provider)])

    workflow_id = await _one_message(client, settings, sessionmaker)

    spans = [s for s in exporter.get_finished_spans() if _workflow_of(s) == workflow_id]
    by_name = {s.name: s for s in spans}
    start = by_name["StartWorkflow:MessageTestWorkflow"]
    run = by_name["RunWorkflow:MessageTestWorkflow"]
    schedule = by_name["StartActivity:send_message"]
    activity = by_name["RunActivity:send_message"]
    complete = by_name["CompleteWorkflow:MessageTestWorkflow"]
    # One trace: the client's start is its root; the workflow's run, what the workflow
    # schedules and its completion hang under it (the SDK's workflow spans have no length
    # of their own), and the activity's run under the scheduling, from the activity worker.
    assert start.parent is None
    assert {s.context.trace_id for s in spans} == {start.context.trace_id}
    assert len(spans) == 5
    assert {_parent(s) for s in (run, schedule, complete)} == {start.context.span_id}
    assert _parent(activity) == schedule.context.span_id
    assert (activity.attributes or {})["temporalActivityID"] == "1"
    assert (run.attributes or {})["temporalRunID"] == (activity.attributes or {})["temporalRunID"]


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _workflow_of(span: ReadableSpan) -> Any:
    return (span.attributes or {}).get("temporalWorkflowID")


async def test_spans_reach_the_configured_otlp_endpoint(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], httpserver: HTTPServer
):
    httpserver.expect_request("/v1/traces", method="POST").respond_with_data(
        b"", content_type="application/x-protobuf"
    )
    traced = settings.model_copy(
        update={
            "otlp_endpoint": httpserver.url_for("/v1/traces"),
            "otlp_service_name": "sutra-test",
        }
    )
    client = await connect(traced)  # as the API and the worker connect

    workflow_id = await _one_message(client, traced, sessionmaker)
    tracing.flush()

    names: set[str] = set()
    services: set[str] = set()
    for request, _ in httpserver.log:
        assert request.path == "/v1/traces"
        assert request.headers["Content-Type"] == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(request.get_data())
        for resource_spans in export.resource_spans:
            services |= {
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            }
            for scope in resource_spans.scope_spans:
                names |= {
                    span.name
                    for span in scope.spans
                    if any(
                        a.key == "temporalWorkflowID" and a.value.string_value == workflow_id
                        for a in span.attributes
                    )
                }
    assert services == {"sutra-test"}
    assert {
        "StartWorkflow:MessageTestWorkflow",
        "RunWorkflow:MessageTestWorkflow",
        "StartActivity:send_message",
        "RunActivity:send_message",
    } <= names
