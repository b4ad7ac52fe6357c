"""`make run`: the whole engine on embedded defaults, in one terminal.

Starts, in order: PostgreSQL (pgserver, unless DATABASE_URL is set), the Temporal dev
server (unless SUTRA_TEMPORAL_ADDRESS is set), migrations, the worker and the API; prints
where everything is; on Ctrl-C stops them in reverse order. Children run in their own
sessions (so one Ctrl-C reaches only this supervisor, which stops them in order) and die
with it if it is killed.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts import search_attributes
from db.migrate import upgrade
from embedded.binaries import temporal_cli
from embedded.defaults import ensure_codec_key, install_default_rules
from services.platform import stranded

ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _wait_for(what: str, ready: Callable[[], bool], timeout: float, child: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            raise RuntimeError(f"{what} exited with code {child.returncode} while starting")
        if ready():
            return
        time.sleep(0.25)
    raise RuntimeError(f"{what} did not become ready within {timeout:.0f}s")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Stack:
    var: Path
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    temporal_port: int = 7233
    ui_port: int = 8233
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    _pg: Any = None

    def log(self, message: str) -> None:
        print(f"sutra | {message}", flush=True)

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.children.append((name, child))
        return child

    def database(self) -> str:
        url = self.env.get("DATABASE_URL") or self.env.get("SUTRA_DATABASE_URL")
        if url:
            self.log("PostgreSQL: using DATABASE_URL")
            return url
        import pgserver  # imported here: only the embedded path needs it

        self.log(f"PostgreSQL: embedded (pgserver), data in {self.var / 'pg'}")
        self._pg = pgserver.get_server(self.var / "pg", cleanup_mode="stop")
        names = self._pg.psql("SELECT datname FROM pg_database;").split()
        if "sutra" not in names:
            self._pg.psql("CREATE DATABASE sutra;")
        uri: str = self._pg.get_uri("sutra")
        self.env["DATABASE_URL"] = uri
        return uri

    def admin_key(self) -> str:
        key = self.env.get("SUTRA_BOOTSTRAP_ADMIN_KEY")
        if not key:
            path = self.var / "admin-key"
            if path.exists():
                key = path.read_text().strip()
            else:
                key = "sutra_dev_" + secrets.token_urlsafe(24)
                path.write_text(key + "\n")
                path.chmod(0o600)
            self.env["SUTRA_BOOTSTRAP_ADMIN_KEY"] = key
        return key

    def payload_keys(self) -> str:
        """The key that encrypts Temporal payloads (customer data); kept in var/ like the
        admin key, because var/temporal.db is unreadable without it."""
        keys = self.env.get("SUTRA_PAYLOAD_KEYS")
        if not keys:
            path = self.var / "payload-keys"
            if path.exists():
                keys = path.read_text().strip()
            else:
                keys = "dev1:" + base64.b64encode(secrets.token_bytes(32)).decode()
                path.write_text(keys + "\n")
                path.chmod(0o600)
            self.env["SUTRA_PAYLOAD_KEYS"] = keys
        return keys

    def codec_key(self, database_url: str) -> str:
        """An ops-only API key for the development UI's codec calls: the UI cannot send an
        Authorization header, so the key is part of the codec URL (development only)."""
        path = self.var / "codec-key"
        if path.exists():
            key = path.read_text().strip()
        else:
            key = "sutra_codec_" + secrets.token_urlsafe(24)
            path.write_text(key + "\n")
            path.chmod(0o600)
        ensure_codec_key(database_url, key)
        return key

    def codec_endpoint(self, key: str) -> str:
        return f"http://{self.api_host}:{self.api_port}/codec/k/{key}"

    def temporal(self, codec_endpoint: str | None = None) -> str:
        address = self.env.get("SUTRA_TEMPORAL_ADDRESS")
        if address:
            self.log(f"Temporal: using {address}")
            return address
        if _port_open("127.0.0.1", self.temporal_port):
            raise RuntimeError(
                f"port {self.temporal_port} is taken: stop the other Temporal server, "
                "or set SUTRA_TEMPORAL_ADDRESS to use it"
            )
        self.log(f"Temporal: dev server, history in {self.var / 'temporal.db'}")
        child = self.spawn(
            "temporal",
            [
                temporal_cli(),
                "server",
                "start-dev",
                "--ip",
                "127.0.0.1",
                "--port",
                str(self.temporal_port),
                "--ui-port",
                str(self.ui_port),
                "--db-filename",
                str(self.var / "temporal.db"),
                "--log-level",
                "error",
                *(["--ui-codec-endpoint", codec_endpoint] if codec_endpoint else []),
                *search_attributes.dev_server_args(),
                *stranded.DEV_SERVER_ARGS,
            ],
        )
        _wait_for(
            "Temporal dev server",
            lambda: _port_open("127.0.0.1", self.temporal_port),
            timeout=60,
            child=child,
        )
        address = f"127.0.0.1:{self.temporal_port}"
        self.env["SUTRA_TEMPORAL_ADDRESS"] = address
        self.env.setdefault("SUTRA_TEMPORAL_UI_URL", f"http://127.0.0.1:{self.ui_port}")
        self.env.setdefault(
            "SUTRA_TEMPORAL_UI_ORIGIN",
            f"http://127.0.0.1:{self.ui_port},http://localhost:{self.ui_port}",
        )
        return address

    def start(self) -> None:
        self.var.mkdir(parents=True, exist_ok=True)
        database_url = self.database()
        self.log("migrating the database")
        upgrade(database_url)
        installed = install_default_rules(database_url)
        if installed:
            self.log(f"installed the default abandoned-cart rule ({installed}), active")
        key = self.admin_key()
        self.payload_keys()
        self.temporal(codec_endpoint=self.codec_endpoint(self.codec_key(database_url)))
        self.log("starting the worker")
        self.env.setdefault("SUTRA_WORKER_METRICS_PORT", "9464")
        self.spawn("worker", [sys.executable, "worker.py"])
        self.log("starting the API")
        api = self.spawn(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "api.app:create_app",
                "--host",
                self.api_host,
                "--port",
                str(self.api_port),
                "--no-access-log",
            ],
        )
        base = f"http://{self.api_host}:{self.api_port}"
        _wait_for("API", lambda: _http_ok(f"{base}/readyz"), timeout=60, child=api)
        self.banner(base, key)

    def banner(self, base: str, key: str) -> None:
        ui = self.env.get("SUTRA_TEMPORAL_UI_URL", "http://127.0.0.1:8233")
        worker_metrics = f"http://127.0.0.1:{self.env['SUTRA_WORKER_METRICS_PORT']}/metrics"
        print(
            f"""
  Sutra is running.

  API docs      {base}/docs
  Dashboard     {base}/dashboard (sign in with the admin key)
  Temporal UI   {ui}
  Admin API key {key}
  Metrics       {base}/metrics (API), {worker_metrics} (worker)
  Command line  .venv/bin/sutra --help   (it reads var/admin-key)

  Try it (the example event, stamped now: an event a day old starts no cart):
    sed "s/2026-11-22T10:00:00Z/$(date -u +%Y-%m-%dT%H:%M:%SZ)/" examples/cart_updated.json |
      curl -s -X POST {base}/v1/events -d @- \\
        -H "Authorization: Bearer {key}" -H "Content-Type: application/json"

  Ctrl-C stops everything.
""",
            flush=True,
        )

    def supervise(self) -> int:
        """Block until Ctrl-C/SIGTERM or until a child dies; return the exit code."""
        stopping = False

        def request_stop(signum: int, _frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        while not stopping:
            for name, child in self.children:
                if child.poll() is not None:
                    self.log(f"{name} exited with code {child.returncode}; stopping the rest")
                    return 1
            time.sleep(0.3)
        return 0

    def stop(self) -> None:
        for name, child in reversed(self.children):
            if child.poll() is None:
                self.log(f"stopping {name}")
                child.send_signal(signal.SIGTERM if name != "temporal" else signal.SIGINT)
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.log(f"{name} did not stop in time; killing it")
                    child.kill()
                    child.wait()
        if self._pg is not None:
            self.log("stopping PostgreSQL")
            self._pg.cleanup()
        self.log("stopped")


def main() -> int:
    env = os.environ
    stack = Stack(
        var=Path(env.get("SUTRA_VAR_DIR", ROOT / "var")),
        api_port=int(env.get("SUTRA_API_PORT", "8000")),
        temporal_port=int(env.get("SUTRA_DEV_TEMPORAL_PORT", "7233")),
        ui_port=int(env.get("SUTRA_DEV_UI_PORT", "8233")),
    )
    try:
        stack.start()
        code = stack.supervise()
    except KeyboardInterrupt:
        code = 0
    except Exception as exc:
        stack.log(f"failed to start: {exc}")
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        stack.stop()
    return code
