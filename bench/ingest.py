"""Event intake throughput against a Temporal dev server: `make bench` or `python bench/ingest.py`.

Measures, in one run on one machine:
  raw       Temporal signal-with-start calls/s straight from a client (the ceiling)
  single    POST /v1/events accepted/s (+ p50/p95 latency), and delivered-to-Temporal/s
  batch     POST /v1/events/batch (500 per request) accepted events/s, and delivered/s

The API runs as its own uvicorn process with its dispatcher; no worker runs, so every
figure is "Temporal has durably accepted the signal", the same thing the raw figure counts.
Uses DATABASE_URL's server when set (a scratch database is created and dropped), else an
embedded pgserver.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.settings import Settings  # noqa: E402
from contracts import search_attributes  # noqa: E402
from contracts.events import EVENT_ADAPTER  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from embedded.binaries import temporal_cli  # noqa: E402
from services.intake.routing import routes_for  # noqa: E402


def _event(cart_id: str | None = None) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": "cart.updated",
        "occurred_at": "2026-11-22T10:00:00Z",
        "customer": {
            "id": f"c_{uuid.uuid4().hex[:10]}",
            "email": "a@example.com",
            "phone": "+923001234567",
            "locale": "en-PK",
            "timezone": "Asia/Karachi",
            "consent": {"email": True, "sms": True, "whatsapp": True},
        },
        "data": {
            "cart_id": cart_id or f"cart_{uuid.uuid4().hex[:12]}",
            "currency": "PKR",
            "items": [{"sku": "SKU1", "name": "Lawn suit", "quantity": 1, "unit_price": "4500.00"}],
        },
    }


async def _pool(count: int, concurrency: int, job: Callable[[int], Awaitable[None]]) -> float:
    """Run ``job(i)`` for i in range(count) with bounded concurrency; return seconds taken."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def runner() -> None:
        while not queue.empty():
            await job(queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(runner() for _ in range(concurrency)))
    return time.perf_counter() - started


def _database() -> tuple[str, Callable[[], None]]:
    admin = os.environ.get("DATABASE_URL")
    server: Any = None
    if not admin:
        import pgserver

        server = pgserver.get_server(tempfile.mkdtemp(prefix="sutra-bench-"), cleanup_mode="delete")
        admin = server.get_uri("postgres")
    admin = admin.replace("postgresql+psycopg://", "postgresql://", 1)
    name = f"sutra_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = admin.partition("?")
    url = base.rsplit("/", 1)[0] + "/" + name + (f"?{query}" if query else "")

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if server is not None:
            server.cleanup()

    return url, drop


async def _wait_delivered(database_url: str, expected: int, started: float) -> float:
    """Seconds from ``started`` until ``expected`` routes have been delivered."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while True:
            cur = await conn.execute("SELECT count(*) FROM event_routes WHERE status = 'delivered'")
            row = await cur.fetchone()
            if row and row[0] >= expected:
                return time.perf_counter() - started
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _stack(
    database_url: str, port: int, concurrency: int
) -> AsyncIterator[tuple[WorkflowEnvironment, httpx.AsyncClient]]:
    """A fresh in-memory dev server and an API process on it: every phase starts equal."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        data_converter=pydantic_data_converter,
        search_attributes=search_attributes.ALL,
        dev_server_log_level="error",
    )
    key = "sutra_bench_" + secrets.token_urlsafe(16)
    api = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "api.app:create_app",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "SUTRA_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "SUTRA_BOOTSTRAP_ADMIN_KEY": key,
            "SUTRA_LOG_LEVEL": "WARNING",
        },
    )
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
            limits=httpx.Limits(max_connections=concurrency),
        ) as http:
            for _ in range(300):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            # Warm-up: connections, the DB pool, the lazy Temporal client.
            await _pool(100, concurrency, lambda i: _post(http, _event()))
            await _wait_delivered(database_url, await _delivered(database_url), 0)
            yield env, http
    finally:
        api.terminate()
        await api.wait()
        await env.shutdown()


async def main(args: argparse.Namespace) -> None:
    database_url, drop = _database()
    upgrade(database_url)
    results: dict[str, float] = {}
    concurrency = args.concurrency
    try:
        # 1. The ceiling: the very signal-with-start the dispatcher makes for an event (same
        # payloads, search attributes and summary), straight from a client.
        async with _stack(database_url, args.port, concurrency) as (env, _):
            settings = Settings(temporal_task_queue="bench-no-worker")

            async def raw(i: int) -> None:
                event = EVENT_ADAPTER.validate_python(_event())
                [route] = routes_for(event, settings, received_at=event.occurred_at)
                await env.client.start_workflow(
                    route.workflow_type,
                    route.start_input,
                    id=route.workflow_id,
                    task_queue=settings.temporal_task_queue,
                    start_signal=route.signal_name,
                    start_signal_args=[route.signal_payload],
                    search_attributes=TypedSearchAttributes(
                        [
                            SearchAttributePair(SearchAttributeKey.for_keyword(k), v)
                            for k, v in route.search_attributes.items()
                        ]
                    ),
                    static_summary=route.summary,
                )

            results["raw"] = args.events / await _pool(args.events, concurrency, raw)

        # 2. Single-event intake, flat out.
        async with _stack(database_url, args.port, concurrency) as (env, http):
            before = await _delivered(database_url)
            started = time.perf_counter()
            seconds = await _pool(args.events, concurrency, lambda i: _post(http, _event()))
            results["single"] = args.events / seconds
            routed = await _wait_delivered(database_url, before + args.events, started)
            results["single_routed"] = args.events / routed

            # Latency where the service is not saturated: a few clients at a time.
            latencies: list[float] = []

            async def timed(i: int) -> None:
                begun = time.perf_counter()
                await _post(http, _event())
                latencies.append(time.perf_counter() - begun)

            await _pool(args.latency_events, args.latency_concurrency, timed)
            latencies.sort()
            results["p50_ms"] = statistics.median(latencies) * 1000
            results["p95_ms"] = latencies[int(len(latencies) * 0.95)] * 1000

        # 3. Batch intake.
        async with _stack(database_url, args.port, concurrency) as (env, http):
            before = await _delivered(database_url)
            batches = args.batch_events // 500

            async def batch(i: int) -> None:
                response = await http.post(
                    "/v1/events/batch", json={"events": [_event() for _ in range(500)]}
                )
                assert response.status_code == 207, response.text
                assert response.json()["accepted"] == 500

            started = time.perf_counter()
            seconds = await _pool(batches, args.batch_concurrency, batch)
            results["batch"] = batches * 500 / seconds
            routed = await _wait_delivered(database_url, before + batches * 500, started)
            results["batch_routed"] = batches * 500 / routed
    finally:
        drop()

    raw_rate = results["raw"]
    print()
    print(f"Sutra intake vs. raw Temporal signal-with-start ({os.cpu_count()} CPUs, one host;")
    print("each phase on a fresh in-memory dev server; no worker, as for the raw figure)")
    print(f"  {'measure':<46}{'per second':>12}{'vs raw':>9}")
    rows = [
        ("raw signal-with-start (client -> Temporal)", raw_rate),
        ("single POST /v1/events, accepted", results["single"]),
        ("single POST /v1/events, delivered to Temporal", results["single_routed"]),
        ("batch POST /v1/events/batch, accepted", results["batch"]),
        ("batch POST /v1/events/batch, delivered", results["batch_routed"]),
    ]
    for label, rate in rows:
        print(f"  {label:<46}{rate:>12.0f}{rate / raw_rate:>8.2f}x")
    print(
        f"  single POST latency at {args.latency_concurrency} concurrent clients: "
        f"p50 {results['p50_ms']:.1f} ms, p95 {results['p95_ms']:.1f} ms"
    )


async def _post(http: httpx.AsyncClient, event: dict[str, Any]) -> None:
    response = await http.post("/v1/events", json=event)
    assert response.status_code == 202, response.text


async def _delivered(database_url: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM event_routes WHERE status = 'delivered'")
        row = await cur.fetchone()
        return int(row[0]) if row else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000, help="events for raw and single runs")
    parser.add_argument("--batch-events", type=int, default=20000, help="events sent in batches")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch-concurrency", type=int, default=4)
    parser.add_argument("--latency-events", type=int, default=500)
    parser.add_argument("--latency-concurrency", type=int, default=4)
    parser.add_argument("--port", type=int, default=8765)
    asyncio.run(main(parser.parse_args()))
