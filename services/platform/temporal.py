"""Connecting to Temporal the same way everywhere: dev server, test server or a cluster."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.client import Interceptor as ClientInterceptor
from temporalio.runtime import Runtime
from temporalio.service import RetryConfig, RPCError, TLSConfig

from config.settings import Settings
from contracts import search_attributes
from contracts.names import ORDER_WORKFLOW
from services.platform import tracing
from services.platform.payload_codec import data_converter

log = logging.getLogger(__name__)


def ui_url(settings: Settings, namespace: str, workflow_id: str, run_id: str) -> str:
    """The workflow run's page in the Temporal UI (``SUTRA_TEMPORAL_UI_URL``)."""
    return (
        f"{settings.temporal_ui_url.rstrip('/')}/namespaces/{quote(namespace, safe='')}"
        f"/workflows/{quote(workflow_id, safe='')}/{quote(run_id, safe='')}/history"
    )


def tls_config(settings: Settings) -> TLSConfig | bool:
    if not (settings.temporal_tls or settings.temporal_tls_cert_path):
        return False

    def read(path: str | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return TLSConfig(
        server_root_ca_cert=read(settings.temporal_tls_ca_path),
        client_cert=read(settings.temporal_tls_cert_path),
        client_private_key=read(settings.temporal_tls_key_path),
    )


# The API and dispatcher would rather learn of an outage in seconds and retry on their own
# schedule than sit in the SDK's default ten seconds of retries.
FAIL_FAST = RetryConfig(max_elapsed_time_millis=3000, max_retries=4)


async def connect(
    settings: Settings,
    *,
    lazy: bool = False,
    retry_config: RetryConfig | None = None,
    runtime: Runtime | None = None,
    interceptors: Sequence[ClientInterceptor] | None = None,
) -> Client:
    """A client of Sutra's; ``interceptors`` default to tracing when SUTRA_OTLP_ENDPOINT
    is set (services/platform/tracing.py), which workers built from it inherit."""
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    tls = tls_config(settings)
    if api_key and tls is False:
        tls = True  # API keys are only ever sent over TLS
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        tls=tls,
        api_key=api_key,
        # Pydantic contracts; encrypted when SUTRA_PAYLOAD_KEYS is set (customer data).
        data_converter=data_converter(settings),
        lazy=lazy,
        retry_config=retry_config,
        runtime=runtime,
        interceptors=tracing.interceptors(settings) if interceptors is None else interceptors,
    )


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Register Sutra's search attributes if missing.

    A workflow that upserts an unregistered attribute fails its task forever, so the
    worker does this before polling. Temporal Cloud refuses the operator call: there the
    attributes are created once with ``tcld`` and this only logs.
    """
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        missing = {
            name: kind
            for name, kind in search_attributes.registration().items()
            if name not in existing.custom_attributes
        }
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
            )
            log.info("registered search attributes %s", ", ".join(missing))
    except RPCError as exc:
        log.warning(
            "could not check or register search attributes (%s); make sure %s exist",
            exc.message,
            ", ".join(k.name for k in search_attributes.ALL),
        )


# Why orders have a task queue of their own, served by a worker without a workflow cache:
# a worker that restarted (or evicted an order) and is then asked a query takes it as a
# "legacy query" task whose history already holds events no workflow task has handled yet.
# The SDK core applies them there, and the order's reaction to them becomes commands that
# go out ahead of an ops update accepted in the next workflow task. Replaying that history
# hands the events and the update to the workflow together, the update first, and fails
# with "Update machine does not handle this event: TimerCanceled": the order is stranded.
# (temporalio/sdk-python#1591 and the sequencing fix proposed in temporalio/sdk-rust#1597;
# tests/test_order_interleavings.py reproduces it.) A worker that caches nothing handles
# every task from the whole history, exactly as a replay does, so what it writes always
# replays. Order histories are short (tens to a few hundred events): the replay per task
# costs milliseconds. Workflows without updates keep the cache.
ORDER_QUEUE_SUFFIX = "-orders"


def order_task_queue(settings: Settings, task_queue: str | None = None) -> str:
    """The order workflows' queue: ``SUTRA_TEMPORAL_ORDER_TASK_QUEUE``, else the given (or
    configured) task queue with ``-orders``."""
    if settings.temporal_order_task_queue:
        return settings.temporal_order_task_queue
    return f"{task_queue or settings.temporal_task_queue}{ORDER_QUEUE_SUFFIX}"


def task_queue_for(settings: Settings, workflow_type: str) -> str:
    """Where a workflow of this type is started."""
    if workflow_type == ORDER_WORKFLOW:
        return order_task_queue(settings)
    return settings.temporal_task_queue


def task_queues(settings: Settings) -> list[str]:
    """Every task queue Sutra's workers poll."""
    return [settings.temporal_task_queue, order_task_queue(settings)]
