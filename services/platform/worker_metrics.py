"""The worker's own Prometheus endpoint: ``GET http://<host>:<SUTRA_WORKER_METRICS_PORT>/metrics``.

One page with both kinds of figures: Sutra's (services/platform/metrics.py: messages,
provider calls, journey starts and exits, which the worker's activities count) and the
Temporal SDK's own (``temporal_*``: task slots, poll and schedule-to-start latencies,
activity and workflow task outcomes, sticky cache). The SDK serves its metrics from its
Rust core on an address of its own; that address is bound to loopback on a free port and
read by a collector on each scrape, so Prometheus has a single target per worker.
"""

from __future__ import annotations

import logging
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from temporalio.runtime import PrometheusConfig

log = logging.getLogger(__name__)

_SCRAPE_TIMEOUT = 2.0


class SdkMetrics:
    """A prometheus_client collector that reads the SDK's exporter at ``url``."""

    def __init__(self, url: str) -> None:
        self.url = url

    def describe(self) -> list[Metric]:
        # Nothing to declare: the registry would otherwise collect (and call the SDK's
        # exporter, maybe not started yet) to learn the names when this is registered.
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            with urllib.request.urlopen(self.url, timeout=_SCRAPE_TIMEOUT) as response:
                text = response.read().decode()
        except OSError as exc:
            # The page still serves Sutra's figures; a missing SDK part is said in the log.
            log.warning("Temporal SDK metrics at %s not readable: %s", self.url, exc)
            return
        yield from text_string_to_metric_families(text)


@dataclass(frozen=True)
class WorkerMetrics:
    port: int
    sdk: PrometheusConfig  # for the worker's Runtime (services.platform.task_failure_log)


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(port: int, host: str = "127.0.0.1") -> WorkerMetrics:
    """Start the endpoint (a daemon thread) and say where the SDK must export to. Call
    once per process, before the worker's Temporal runtime is created."""
    sdk_address = f"127.0.0.1:{_free_loopback_port()}"
    REGISTRY.register(SdkMetrics(f"http://{sdk_address}/metrics"))
    start_http_server(port, addr=host)
    log.info("worker metrics on http://%s:%s/metrics", host, port)
    return WorkerMetrics(
        port=port,
        sdk=PrometheusConfig(
            bind_address=sdk_address,
            counters_total_suffix=True,
            unit_suffix=True,
            durations_as_seconds=True,
        ),
    )
