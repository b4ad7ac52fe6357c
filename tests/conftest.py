"""Shared fixtures: a real PostgreSQL database per run, real Temporal servers, the real app.

The database is created fresh for each test run (and dropped after), on the server named
by DATABASE_URL, or on an embedded pgserver when none is set; migrations build its schema.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from pytest_httpserver import HTTPServer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from config.settings import Environment, Settings
from contracts import search_attributes
from db.engine import create_engine, create_sessionmaker
from db.migrate import upgrade
from embedded.binaries import temporal_cli, temporal_test_server
from services.platform import stranded
from tests.order_shop import ShopEndpoint
from worker import Workers, build_worker

pytest_plugins = ["tests.providers.fixtures", "tests.order_api"]

# The files that take longest, first: `make test` hands whole files to its two workers, and
# a long file started last keeps one worker busy while the other has finished.
_LONGEST_FIRST = (
    "test_crash_safety.py",
    "test_product_fanout.py",
    "test_fanout_kill.py",
    "test_fuzz_api.py",
    "test_send_crash.py",
    "test_temporal_kill.py",
    "test_sweep_kill.py",
    "test_order_interleavings.py",
    "test_db_hang.py",
    "test_time_triggers.py",
    "test_temporal_outage.py",
    "test_provider_storms.py",
    "test_db_outage.py",
    "test_rules_api.py",
    "test_make_run.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: n for n, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


ADMIN_KEY = "sutra_test_admin_" + secrets.token_urlsafe(16)


def _admin_url() -> tuple[str, Any]:
    url = os.environ.get("DATABASE_URL") or os.environ.get("SUTRA_DATABASE_URL")
    if url:
        return url, None
    import pgserver

    server = pgserver.get_server(Path(tempfile.mkdtemp(prefix="sutra-pg-")), cleanup_mode="delete")
    return server.get_uri("postgres"), server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return f"{base}?{query}" if query else base


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """An empty database, or a copy of ``template``; its URL."""
    copy = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{copy}')
    return _with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    """A maintenance connection to the PostgreSQL server tests make their databases on."""
    url, server = _admin_url()
    yield _plain(url)
    if server is not None:
        server.cleanup()


@pytest.fixture(scope="session")
def template_database(admin_url: str) -> Iterator[str]:
    """This process's migrated database, copied for each test file (see ``database_url``)."""
    name = f"sutra_template_{os.getpid()}_{secrets.token_hex(4)}"
    upgrade(create_database(admin_url, name))
    yield name
    drop_database(admin_url, name)


@pytest.fixture(scope="module")
def database_url(admin_url: str, template_database: str) -> Iterator[str]:
    """A database of the test file's own, a copy of the migrated template (some 30 ms).
    Shared by a whole process, earlier files' leftovers got in later tests' way: the
    dispatcher delivering their pending routes first, their outbox rows, their suppressed
    addresses."""
    name = f"sutra_test_{os.getpid()}_{secrets.token_hex(4)}"
    yield create_database(admin_url, name, template=template_database)
    drop_database(admin_url, name)


# tests.factories.customer's defaults, which many tests' customers share in one database.
_SHARED_ADDRESSES = ("+923001234567", "ayesha@example.com")


@pytest.fixture(autouse=True)
def _shared_addresses_stay_reachable(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that gets a shared default address suppressed (a provider refusing it as
    invalid, a bounce, a STOP) silences that channel for every later test in its process:
    once, a cart journey's SMS and a split's SMS variant went missing that way, far from
    the test that caused it. Such a test fails here, by name, and the suppression goes."""
    yield
    if "database_url" not in request.fixturenames:
        return
    url = _plain(request.getfixturevalue("database_url"))
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute(
            "DELETE FROM suppressions WHERE address = ANY(%s) RETURNING channel, address, reason",
            [list(_SHARED_ADDRESSES)],
        ).fetchall()
    if found:
        pytest.fail(
            f"this test suppressed a shared default address {found}: give its customer an"
            " address of its own (tests.provider_reports.phone(), a uid email)"
        )


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(env=Environment.test, database_url=database_url))
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture(scope="session")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server, as `make run` starts it, for end-to-end tests."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        data_converter=pydantic_data_converter,
        search_attributes=search_attributes.ALL,
        dev_server_log_level="error",
        dev_server_extra_args=list(stranded.DEV_SERVER_ARGS),
    )
    yield env
    await env.shutdown()


@pytest.fixture
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's time-skipping test server: days of waiting in milliseconds.

    A fresh server for every test (it starts in about 0.1 s). The server stops its clock
    while any workflow or activity task is waiting for a worker, and a task left behind for
    a worker that has stopped holds that lock for good, even after its workflow is
    terminated. On a shared server one test's leftover journey made every later test's
    `env.sleep` run in real time until its RPC timed out."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_test_server(),
        data_converter=pydantic_data_converter,
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes=search_attributes.registration(),
        )
    )
    yield env
    await env.shutdown()


@pytest.fixture
def shop_endpoint(httpserver: HTTPServer) -> ShopEndpoint:
    """The shop's backend, receiving Sutra's signed order notices."""
    return ShopEndpoint(httpserver)


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:12]}"


def make_settings(
    database_url: str, temporal_address: str, task_queue: str, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "env": Environment.test,
        "database_url": database_url,
        "temporal_address": temporal_address,
        "temporal_task_queue": task_queue,
        "bootstrap_admin_key": ADMIN_KEY,
        "dispatcher_poll_interval": timedelta(milliseconds=100),
        "dispatcher_max_backoff": timedelta(seconds=1),
        "dispatcher_rpc_timeout": timedelta(seconds=2),
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(database_url: str, dev_server: WorkflowEnvironment, task_queue: str) -> Settings:
    return make_settings(
        database_url, dev_server.client.service_client.config.target_host, task_queue
    )


@pytest.fixture
async def worker(
    dev_server: WorkflowEnvironment,
    task_queue: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[Workers]:
    worker = build_worker(dev_server.client, task_queue, sessionmaker)
    async with worker:
        yield worker


class Api:
    """The app, served in-process through its real lifespan (dispatcher included)."""

    def __init__(self, http: httpx.AsyncClient, app: Any) -> None:
        self.http = http
        self.app = app

    async def post_event(self, event: dict[str, Any], key: str = ADMIN_KEY) -> httpx.Response:
        return await self.http.post("/v1/events", json=event, headers=auth(key))

    async def post_batch(self, events: list[Any], key: str = ADMIN_KEY) -> httpx.Response:
        return await self.http.post("/v1/events/batch", json={"events": events}, headers=auth(key))

    async def get(self, path: str, key: str = ADMIN_KEY) -> httpx.Response:
        return await self.http.get(path, headers=auth(key))


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def start_api(settings: Settings) -> tuple[Api, Any]:
    app = create_app(settings)
    manager = LifespanManager(app, startup_timeout=30, shutdown_timeout=30)
    await manager.__aenter__()
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=manager.app), base_url="http://sutra"
    )
    return Api(http, app), manager


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    client, manager = await start_api(settings)
    yield client
    await client.http.aclose()
    await manager.__aexit__(None, None, None)


@pytest.fixture
def temporal(dev_server: WorkflowEnvironment) -> Client:
    return dev_server.client
