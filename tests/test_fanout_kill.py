"""A back-in-stock fan-out whose worker is SIGKILLed mid-page and again at the boundary
where the fan-out continues as new; the run is not terminated: a new worker process takes
it over, the killed page is retried there, and every subscriber still gets exactly one
journey and one message.

The worker is ``python -m tests.worker_process`` (the production wiring: the fan-out's
journeys run on it too, their email going to the outbox); the API, its dispatcher
starting the fan-out, runs in-process. A page is small so that the audience takes more
than one run of the fan-out (50 pages each). ``SUTRA_SOAK=1``: 2,000 subscribers, five
kills.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from contracts import workflow_ids
from db.models import BackInStockSubscription, Customer
from tests.batch_kills import Kill, kill, retried_after_heartbeat_timeout, runs
from tests.conftest import ADMIN_KEY, auth, make_settings, start_api
from tests.factories import eventually, now_iso, uid
from tests.processes import WorkerProcess, processes, sutra_env
from workflows.product_fanout import PAGES_PER_RUN

SOAK = os.environ.get("SUTRA_SOAK") == "1"
SUBSCRIBERS, PAGE = (2000, 20) if SOAK else (110, 2)
# Where the worker is SIGKILLed (tests/batch_kills.py), and once what share of the audience
# is claimed; between-runs: after the last page of the first fan-out run.
KILLS: list[tuple[str, float]] = (
    [
        ("after-claims", 0.1),
        ("before-marks", 0.3),
        ("between-runs", 0.0),
        ("mid-starts", 0.6),
        ("before-marks", 0.8),
    ]
    if SOAK
    else [("before-marks", 0.2), ("between-runs", 0.0)]
)


async def _kills(
    worker: WorkerProcess, temporal: Client, database_url: str, rule_id: str
) -> list[Kill]:
    done = []
    for how, share in KILLS:
        done.append(
            await kill(
                worker,
                temporal,
                database_url,
                rule_id,
                how,
                claimed=int(share * SUBSCRIBERS),
                started=PAGES_PER_RUN * PAGE,
            )
        )
    return done


async def _audience(sessionmaker: async_sessionmaker[AsyncSession], sku: str) -> list[str]:
    ids = [f"{sku}_c{i:05d}" for i in range(SUBSCRIBERS)]
    now = datetime.now(UTC)
    async with sessionmaker() as session, session.begin():
        await session.execute(
            insert(Customer),
            [
                {
                    "id": cid,
                    "email": f"{cid}@example.com",
                    "consent_email": True,
                    "first_seen_at": now - timedelta(days=2),
                }
                for cid in ids
            ],
        )
        await session.execute(
            insert(BackInStockSubscription),
            [
                {"sku": sku, "customer_id": cid, "subscribed_at": now - timedelta(days=1)}
                for cid in ids
            ],
        )
    return ids


def _outcome(database_url: str, rule_id: str, sku: str) -> dict[str, Any]:
    with psycopg.connect(database_url) as conn:

        def one(sql: str, *args: Any) -> Any:
            row = conn.execute(sql, args).fetchone()
            assert row is not None
            return row[0] if len(row) == 1 else tuple(row)

        return {
            "claims": one(
                "SELECT count(*), count(DISTINCT customer_id), count(started_at)"
                " FROM journey_claims WHERE rule_id = %s",
                rule_id,
            ),
            "notified": one(
                "SELECT count(*), count(DISTINCT notified_event_id)"
                " FROM back_in_stock_subscriptions WHERE sku = %s AND notified_at IS NOT NULL",
                sku,
            ),
            "messages": one(
                "SELECT count(*), count(DISTINCT customer_id) FROM messages"
                " WHERE rule_id = %s AND status = 'sent'",
                rule_id,
            ),
            "not_sent": one(
                "SELECT count(*) FROM messages WHERE rule_id = %s AND status <> 'sent'", rule_id
            ),
        }


@pytest.mark.timeout(1500 if SOAK else 300)
async def test_a_fanout_whose_worker_is_killed_mid_page_tells_every_subscriber_once(
    database_url: str,
    dev_server: WorkflowEnvironment,
    task_queue: str,
    sessionmaker: async_sessionmaker[AsyncSession],
):
    temporal: Client = dev_server.client
    address = temporal.service_client.config.target_host
    folder = Path(tempfile.mkdtemp(prefix="sutra-fanout-kill-"))
    overrides: dict[str, Any] = {
        "fanout_batch_size": PAGE,
        "fanout_rate_per_second": 1e9,
        "frequency_cap": timedelta(0),
    }
    sku = uid("SKU")
    subscribers = await _audience(sessionmaker, sku)
    api, lifespan = await start_api(make_settings(database_url, address, task_queue, **overrides))
    passed = False
    try:
        with processes() as started:
            env = sutra_env(
                database_url,
                address,
                task_queue,
                SUTRA_FANOUT_BATCH_SIZE=str(PAGE),
                SUTRA_FANOUT_RATE_PER_SECOND="1e9",
                SUTRA_FREQUENCY_CAP="PT0S",
            )
            worker = started.add(WorkerProcess(folder, env))
            worker.start()
            created = await api.http.post(
                "/v1/rules",
                json={
                    "name": f"back in stock {sku}",
                    "trigger": {"event": "product.back_in_stock"},
                    "steps": [{"send": {"channels": ["email"], "template": "back_in_stock"}}],
                    "quiet_hours": None,
                    "attribution_window": "PT1S",
                },
                headers=auth(ADMIN_KEY),
            )
            assert created.status_code == 201, created.text
            rule_id = created.json()["id"]
            activated = await api.http.post(
                f"/v1/rules/{rule_id}/activate", headers=auth(ADMIN_KEY)
            )
            assert activated.status_code == 200, activated.text

            event_id = uid("evt")
            began = time.monotonic()
            response = await api.post_event(
                {
                    "id": event_id,
                    "type": "product.back_in_stock",
                    "occurred_at": now_iso(),
                    "data": {"sku": sku, "name": "Lawn suit", "url": "https://shop.example/p/1"},
                }
            )
            assert response.status_code == 202, response.text
            kills = await _kills(worker, temporal, database_url, rule_id)
            handle = temporal.get_workflow_handle(workflow_ids.fanout(event_id))
            reached = await asyncio.wait_for(handle.result(follow_runs=True), 600)
            fanned_out = time.monotonic() - began
            assert reached == SUBSCRIBERS

            async def all_sent() -> dict[str, Any] | None:
                outcome = await asyncio.to_thread(_outcome, database_url, rule_id, sku)
                return outcome if outcome["messages"][1] >= SUBSCRIBERS else None

            outcome = await eventually(
                all_sent, within=600 if SOAK else 180, interval=1, what="every subscriber told"
            )
            # One journey per subscriber: one claim each, started; Temporal knows exactly
            # that many journeys of the rule; each subscription notified once, by this event;
            # one message each.
            assert outcome["claims"] == (SUBSCRIBERS, SUBSCRIBERS, SUBSCRIBERS)
            journeys = await eventually(
                lambda: _journeys(temporal, rule_id),
                within=30,
                what="the journeys in visibility",
            )
            assert journeys == SUBSCRIBERS
            assert outcome["notified"] == (SUBSCRIBERS, 1)
            assert outcome["messages"] == (SUBSCRIBERS, SUBSCRIBERS), outcome
            async with sessionmaker() as session:
                told = set(
                    await session.scalars(
                        select(BackInStockSubscription.customer_id)
                        .where(BackInStockSubscription.sku == sku)
                        .where(BackInStockSubscription.notified_event_id == event_id)
                    )
                )
            assert told == set(subscribers)
            # The killed pages were taken over by the new worker once their attempt went
            # silent, not waited out to the page timeout.
            taken_over = await retried_after_heartbeat_timeout(temporal, handle.id)
            chain = await runs(temporal, handle.id)
            assert len(chain) >= 2, "the audience takes more than one fan-out run"
            assert chain[0].close_time is not None
            boundary = next(k.at for k in kills if k.how == "between-runs")
            continued = (chain[0].close_time - boundary).total_seconds()
            assert taken_over >= sum(1 for k in kills if k.how != "between-runs")
            print(
                f"\n[fanout-kill] {SUBSCRIBERS} subscribers in pages of {PAGE}, {len(chain)} runs;"
                f" worker SIGKILLed {'; '.join(map(str, kills))}; the first run"
                f" continued as new {continued:+.1f}s from the kill at its end"
                f" ({'on the new worker' if continued > 0 else 'before it'});"
                " pages retried on the new worker after"
                f" a heartbeat timeout: {taken_over}; fan-out done in {fanned_out:.1f}s;"
                f" journeys {journeys}, claims {outcome['claims'][0]}, messages sent"
                f" {outcome['messages'][0]} to {outcome['messages'][1]} subscribers,"
                f" duplicates {outcome['messages'][0] - SUBSCRIBERS}; worker starts"
                f" {worker.starts}"
            )
            await api.http.post(f"/v1/rules/{rule_id}/archive", headers=auth(ADMIN_KEY))
            passed = True
    finally:
        await api.http.aclose()
        await lifespan.__aexit__(None, None, None)
        if passed:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"[fanout-kill] logs kept in {folder}")


async def _journeys(temporal: Client, rule_id: str) -> int | None:
    count = (await temporal.count_workflows(f'RuleId = "{rule_id}"')).count
    return count if count >= SUBSCRIBERS else None
