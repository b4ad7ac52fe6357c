"""Real processes for the fault tests: a Temporal dev server on a database file that can be
stopped and started again, the API under uvicorn, the worker, and a TCP proxy in front of
PostgreSQL that can cut every connection and refuse new ones, or stall them (a database
that hangs: accepted, never answered, never closed).

Every helper can be stopped more than once and is stopped by the ``Processes`` registry
the tests use, failed test or not; output goes to log files in a temporary folder so a
failure can show the end of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from contracts import search_attributes
from embedded.binaries import temporal_cli
from services.platform import stranded

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class _Process:
    """A child process with its output in ``log``; ``kill`` is SIGKILL, ``stop`` is polite."""

    name = "process"

    def __init__(self, log: Path) -> None:
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.starts += 1
        with open(self.log, "ab") as out:
            out.write(f"\n==== start #{self.starts}: {' '.join(argv)}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: a kill reaches its children too
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _check_alive(self) -> None:
        if not self.running:
            raise AssertionError(f"{self.name} exited while starting:\n{_tail(self.log)}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushing, exactly like a crash or an OOM kill."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)
        self.process = None

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL if it has not gone within ``timeout``."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def tail(self, lines: int = 40) -> str:
        return _tail(self.log, lines)


class DevServer(_Process):
    """``temporal server start-dev`` keeping its history in ``db_file``: stopped and started
    again on the same file, sleeping workflows and pending tasks are still there."""

    name = "Temporal dev server"

    def __init__(self, folder: Path, port: int | None = None) -> None:
        super().__init__(folder / "temporal.log")
        self.db_file = folder / "temporal.db"
        self.port = port or free_port()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        self._spawn(
            [
                temporal_cli(),
                "server",
                "start-dev",
                "--ip",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--headless",
                "--db-filename",
                str(self.db_file),
                "--log-level",
                "error",
                *search_attributes.dev_server_args(),
                *stranded.DEV_SERVER_ARGS,
            ]
        )
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            self._check_alive()
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"{self.name} did not listen:\n{self.tail()}")
            time.sleep(0.1)

    async def ready(self, within: float = 60) -> None:
        """Wait until the frontend answers and the namespace is usable."""
        from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
        from temporalio.client import Client

        deadline = time.monotonic() + within
        last: BaseException | None = None
        while time.monotonic() < deadline:
            try:
                client = await Client.connect(self.address)
                await client.workflow_service.describe_namespace(
                    DescribeNamespaceRequest(namespace="default")
                )
                return
            except Exception as exc:
                last = exc
                await asyncio.sleep(0.3)
        raise AssertionError(f"{self.name} not ready: {last!r}\n{self.tail()}")


def sutra_env(
    database_url: str, temporal_address: str, task_queue: str, **extra: str
) -> dict[str, str]:
    """The environment of a Sutra process: this one's minus its SUTRA_ settings, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUTRA_")}
    env.update(
        DATABASE_URL=database_url,
        SUTRA_ENV="test",
        SUTRA_TEMPORAL_ADDRESS=temporal_address,
        SUTRA_TEMPORAL_TASK_QUEUE=task_queue,
        SUTRA_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class WorkerProcess(_Process):
    """``python -m tests.worker_process``: the production worker wiring, from ``env`` (or
    another worker module printing "worker ready", e.g. ``tests.sweep_worker_process``)."""

    name = "worker"

    def __init__(
        self, folder: Path, env: dict[str, str], module: str = "tests.worker_process"
    ) -> None:
        super().__init__(folder / "worker.log")
        self.env = env
        self.module = module

    def start(self, timeout: float = 90) -> None:
        size = self.log.stat().st_size if self.log.exists() else 0
        self._spawn([sys.executable, "-m", self.module], self.env)
        deadline = time.monotonic() + timeout
        while True:
            with open(self.log, "rb") as out:
                out.seek(size)
                if b"worker ready" in out.read():
                    return
            self._check_alive()
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"{self.name} did not start:\n{self.tail()}")
            time.sleep(0.1)


class ApiProcess(_Process):
    """The API as production runs it: ``uvicorn --factory api.app:create_app``, dispatcher
    included (``SUTRA_DISPATCHER_ENABLED`` defaults to on)."""

    name = "API"

    def __init__(self, folder: Path, env: dict[str, str], port: int | None = None) -> None:
        super().__init__(folder / "api.log")
        self.env = env
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> None:
        self._spawn(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "api.app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            self.env,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            self._check_alive()
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"{self.name} did not start:\n{self.tail()}")
            time.sleep(0.1)


class Processes:
    """Everything a test started, killed at the end whatever happened."""

    def __init__(self) -> None:
        self.started: list[Any] = []

    def add(self, thing: Any) -> Any:
        self.started.append(thing)
        return thing

    def cleanup(self) -> None:
        for thing in reversed(self.started):
            with contextlib.suppress(Exception):
                thing.kill()

    def logs(self) -> str:
        return "\n".join(
            f"---- {p.name} ({p.log}):\n{p.tail()}" for p in self.started if isinstance(p, _Process)
        )


@contextlib.contextmanager
def processes() -> Iterator[Processes]:
    registry = Processes()
    try:
        yield registry
    except BaseException:
        sys.stderr.write(registry.logs() + "\n")
        raise
    finally:
        registry.cleanup()


class TcpProxy:
    """A TCP proxy in its own thread, in front of PostgreSQL.

    ``cut()`` closes every connection through it and refuses new ones (the database is
    gone, as far as the client can tell); ``restore()`` accepts again on the same port.
    ``stall()`` is the nastier fault, a database that hangs: connections are still
    accepted and nothing is ever closed, but no byte goes through in either direction,
    on new connections or on those already open (what a client sent is held, as the
    kernel of a hung server or a congested path holds it); ``resume()`` lets everything
    held go on, in order, closes included. A connection whose client gave up during the
    stall before anything reached the server is dropped at ``resume()`` instead of being
    opened upstream. The proxy's kernel keeps ACKing, so TCP keepalives and
    ``tcp_user_timeout`` on the client see a healthy peer, as they would with a hung
    server. ``stall_after(marker, then)`` stalls at a chosen point of one transaction:
    once a client has sent ``marker`` (an event id in an INSERT, say), right after that
    connection's next message containing ``then`` (``COMMIT_MESSAGE``: the server commits
    and its answer is held), or right after the marker itself when ``then`` is None (the
    transaction is left open). It listens on TCP and forwards to a TCP address or, for an
    embedded pgserver, to its Unix socket."""

    name = "TCP proxy"

    def __init__(
        self,
        target_host: str = "127.0.0.1",
        target_port: int = 5432,
        port: int | None = None,
        unix: str | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.unix = unix
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None
        self.connections = 0
        self.stalled_connections = 0  # accepted while stalled
        self.held_bytes = 0  # bytes that arrived while stalled and were held
        self.stalled_at: float | None = None  # time.monotonic() of the last stall
        self._trigger: tuple[bytes, bytes | None] | None = None
        self._thread.start()
        self._run(self._init())

    async def _init(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def flowing(self) -> asyncio.Event:
        assert self._flowing is not None
        return self._flowing

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def start(self) -> TcpProxy:
        self._run(self._listen())
        return self

    def restore(self) -> None:
        if self._server is None:
            self._run(self._listen())

    def cut(self) -> None:
        self._run(self._close())

    def stall(self) -> None:
        self._run(self._set_flowing(False))

    def stall_after(self, marker: bytes, then: bytes | None = None) -> None:
        self.stalled_at = None
        self._trigger = (marker, then)

    def resume(self) -> None:
        self._run(self._set_flowing(True))

    async def _set_flowing(self, flowing: bool) -> None:
        if flowing:
            self.flowing.set()
        else:
            self.flowing.clear()
            self.stalled_at = time.monotonic()

    def kill(self) -> None:
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self._run(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def _shutdown(self) -> None:
        await self._close()
        self.flowing.set()  # held connections end instead of waiting
        # Every socket is aborted: let the pipes see it and end before the loop stops.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=2)

    async def _held_until_flowing(self, reader: asyncio.StreamReader) -> bytes | None:
        """While stalled, a new connection's bytes are read and held, so a client that
        gives up is noticed; None when it gave up before the proxy resumed."""
        held = bytearray()
        self.stalled_connections += 1
        while not self.flowing.is_set():
            read = asyncio.ensure_future(reader.read(65536))
            flowing = asyncio.ensure_future(self.flowing.wait())
            done, _ = await asyncio.wait({read, flowing}, return_when=asyncio.FIRST_COMPLETED)
            if read in done:
                flowing.cancel()
                data = read.result()
                if not data:
                    return None
                held += data
                self.held_bytes += len(data)
            else:
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    data = await read  # a read that completed as it was cancelled
                    if not data:
                        return None
                    held += data
        return bytes(held)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:
            writer.transport.abort()
            return
        self._writers.add(writer)
        first = b""
        if not self.flowing.is_set():
            held = await self._held_until_flowing(reader)
            if held is None:
                writer.transport.abort()
                self._writers.discard(writer)
                return
            first = held
        try:
            if self.unix is not None:
                up_reader, up_writer = await asyncio.open_unix_connection(self.unix)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self.connections += 1
        self._writers.add(up_writer)
        if first:
            up_writer.write(first)

        marked = False  # this connection sent the armed trigger's marker

        def triggered(data: bytes) -> bool:
            nonlocal marked
            if self._trigger is None or not self.flowing.is_set():
                return False
            marker, then = self._trigger
            if not marked and marker in data:
                marked = True
                return then is None
            return marked and then is not None and then in data

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool
        ) -> None:
            try:
                while True:
                    data = await src.read(65536)
                    if upstream and triggered(data):
                        # Stalled before this goes on, so the server's answer is held.
                        self._trigger = None
                        await self._set_flowing(False)
                        dst.write(data)
                        await dst.drain()
                        continue
                    if not self.flowing.is_set():
                        # Stalled: hold what arrived, and the close too, until resumed.
                        self.held_bytes += len(data)
                        await self.flowing.wait()
                    if not data:
                        break
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.transport.abort()
                self._writers.discard(dst)

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))


# How psycopg commits: a simple-query message carrying the bare command.
COMMIT_MESSAGE = b"COMMIT\x00"


def proxy_for(database_url: str) -> TcpProxy:
    """A proxy in front of the test database: its TCP address, or the Unix socket of the
    embedded pgserver that ``make test`` starts when no DATABASE_URL is set (``?host=/dir``)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    socket_dir = url.query.get("host")
    if isinstance(socket_dir, str) and socket_dir.startswith("/"):
        return TcpProxy(unix=f"{socket_dir}/.s.PGSQL.{url.port or 5432}")
    return TcpProxy(url.host or "127.0.0.1", url.port or 5432)


def through(database_url: str, proxy: TcpProxy) -> str:
    """``database_url`` by way of ``proxy``."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url).difference_update_query(["host"])
    return url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


# --- the load the fault tests run, and what they check afterwards --------------------------


def fast_cart_rule(prefix: str, wait: str = "PT2S") -> dict[str, Any]:
    """An abandoned-cart rule for this test's customers only: idle 1 s, then three texts
    ``wait`` apart (single-channel steps: no bounce watch holds the journey open)."""
    return {
        "name": f"Fault test carts {prefix}",
        "priority": 1,
        "trigger": {"event": "cart.abandoned", "after": "PT1S"},
        "conditions": {"field": "customer.id", "op": "starts_with", "value": prefix},
        "quiet_hours": None,
        "steps": [
            {"send": {"channels": ["sms"], "template": "cart_reminder_1"}},
            {"wait": wait},
            {
                "send": {
                    "channels": ["sms"],
                    "template": "cart_reminder_2",
                    "incentive": {"percent_off": 5, "expires_in": "P2D"},
                }
            },
            {"wait": wait},
            {"send": {"channels": ["sms"], "template": "cart_reminder_1"}},
        ],
        "exit": {"events": ["order.placed"], "order_scope": "cart"},
        "reentry": {"policy": "every_time"},
    }


def fast_welcome_rule(prefix: str, wait: str = "PT2S") -> dict[str, Any]:
    """A welcome series for this test's customers: an email, a wait, another email."""
    return {
        "name": f"Fault test welcome {prefix}",
        "trigger": {"event": "customer.created"},
        "conditions": {"field": "customer.id", "op": "starts_with", "value": prefix},
        "quiet_hours": None,
        "steps": [
            {"send": {"channels": ["email"], "template": "welcome"}},
            {"wait": wait},
            {"send": {"channels": ["email"], "template": "welcome"}},
        ],
    }


def phone_for(n: int) -> str:
    return f"+92300{n:07d}"


def ledger(database_url: str, customer_ids: list[str]) -> list[dict[str, Any]]:
    """The ledger rows of these customers, straight from the database."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return list(
            conn.execute(
                'SELECT key, customer_id, channel, template, status, reason, provider, "to",'
                " provider_message_id, provider_attempts, workflow_id, order_id,"
                " sending_started_at, sent_at"
                " FROM messages WHERE customer_id = ANY(%s) ORDER BY created_at",
                (customer_ids,),
            )
        )


def terminate_backends(admin_url: str, database: str) -> int:
    """Drop every connection to ``database`` (what a failover or a network cut does)."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return len(rows)


def assert_each_text_sent_once(
    rows: list[dict[str, Any]],
    carts: list[tuple[str, str, str]],
    twilio: Any,
    texts_per_cart: int,
) -> None:
    """Every (customer, cart, phone) got ``texts_per_cart`` texts: one ledger row each,
    ``sent``, and exactly one message at Twilio per row."""
    from collections import Counter

    assert rows, "no ledger rows"
    assert Counter(r["key"] for r in rows).most_common(1)[0][1] == 1
    sent = [r for r in rows if r["status"] == "sent"]
    assert len(sent) == len(rows) == len(carts) * texts_per_cart, [
        (r["key"][-8:], r["template"], r["status"], r["reason"])
        for r in rows
        if r["status"] != "sent"
    ]
    for customer_id, _, phone in carts:
        mine = [r for r in sent if r["customer_id"] == customer_id]
        delivered = twilio.sent_to(phone)
        assert len(delivered) == texts_per_cart, (customer_id, [m.body for m in delivered])
        assert sorted(m.sid for m in delivered) == sorted(r["provider_message_id"] for r in mine)
